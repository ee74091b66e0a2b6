/**
 * The governor's ledger of outstanding reservations, by taskId, and how many of them are in use.
 *
 * A reservation is the picked entry's own queue node (levels.ts), so recording one allocates
 * nothing, and the in-use mark is a flag on it. A taskId picked again before its first release is
 * a caller bug the governor survives: the extra reservations stack, and each release gives back the
 * newest one.
 */
import type { EntryNode } from './levels.js';
import { ChurnMap } from '../collections.js';

/** See the module comment. */
export class Reservations {
  /** The first reservation of each taskId: the only one, unless a caller bug stacked more. */
  readonly #first = new ChurnMap<string, EntryNode>();
  /** Reservations of a taskId beyond its first, oldest first. */
  readonly #stacked = new Map<string, EntryNode[]>();
  #used = 0;

  /** Reservations marked used and not yet released. */
  get used(): number { return this.#used; }

  /** Records the reservation a pick just made. */
  add(node: EntryNode): void {
    const taskId = node.entry.taskId;
    if (!this.#first.has(taskId)) this.#first.set(taskId, node);
    else this.#stacked.set(taskId, [...(this.#stacked.get(taskId) ?? []), node]);
  }

  /** Marks the taskId's newest reservation used; a second mark, or a mark with none outstanding, is ignored. */
  markUsed(taskId: string): void {
    const stacked = this.#stacked.size === 0 ? undefined : this.#stacked.get(taskId);
    const node = stacked ? stacked[stacked.length - 1] : this.#first.get(taskId);
    if (!node || node.used) return;
    node.used = true;
    this.#used++;
  }

  /** Removes the taskId's newest reservation, undoing its used mark: the node, or undefined if there was none. */
  take(taskId: string): EntryNode | undefined {
    // Stacking is a caller bug, so the usual release skips that lookup on a size check.
    const stacked = this.#stacked.size === 0 ? undefined : this.#stacked.get(taskId);
    const node = stacked ? stacked.pop() : this.#first.get(taskId);
    if (!node) return undefined;
    if (!stacked) this.#first.delete(taskId);
    else if (stacked.length === 0) this.#stacked.delete(taskId);
    if (node.used) {
      node.used = false;
      this.#used--;
    }
    return node;
  }
}
