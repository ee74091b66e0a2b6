/**
 * An order-keyed FIFO deque for the governor's per-instance queues.
 *
 * An array plus a head index keeps `shift()` O(1) without the O(n) cost of `Array#shift()`.
 * Removal is lazy: the owner marks an item dead and the deque skips it on the way out, so a cancel
 * never pays for a mid-array splice. The array is compacted once the consumed prefix and the dead
 * items make up half of it, which keeps the work amortised O(1) per item.
 *
 * Also here: the intrusive doubly linked rings the governor keeps its agents and instances in, so
 * rotating a picked node to the back or dropping an emptied one is O(1) and allocation-free.
 */

/** What the deque needs from an item: its sort key and a tombstone flag. */
export interface DequeItem {
  /** FIFO key; lower leaves first, ties keep insertion order. */
  readonly order: number;
  /** Set by {@link OrderedDeque.kill}; a dead item is skipped and dropped. */
  dead: boolean;
}

/** Below this many wasted cells compaction is not worth the copy. */
const COMPACT_MIN = 64;

/** A FIFO deque ordered by `order`, with O(1) amortised push, shift and lazy removal. */
export class OrderedDeque<T extends DequeItem> {
  #items: (T | undefined)[] = [];
  #head = 0;
  #dead = 0;

  /** Live items waiting. */
  get size(): number {
    return this.#items.length - this.#head - this.#dead;
  }

  /**
   * Adds an item in `order`. The usual in-sequence case is a plain push; an out-of-order key
   * binary-searches its place after any equal keys, so FIFO holds among ties.
   */
  push(item: T): void {
    const items = this.#items;
    const last = items.length - 1;
    if (last < this.#head || (items[last] as T).order <= item.order) {
      items.push(item);
      return;
    }
    let lo = this.#head;
    let hi = items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((items[mid] as T).order <= item.order) lo = mid + 1;
      else hi = mid;
    }
    items.splice(lo, 0, item);
  }

  /** The first live item without removing it. */
  peek(): T | undefined {
    this.#skipDead();
    return this.#items[this.#head];
  }

  /** Removes and returns the first live item. */
  shift(): T | undefined {
    this.#skipDead();
    const items = this.#items;
    if (this.#head >= items.length) return undefined;
    const item = items[this.#head] as T;
    // Clear the cell so a consumed item can be collected before the next compaction.
    items[this.#head++] = undefined;
    if (this.#head === items.length) {
      items.length = 0;
      this.#head = 0;
    } else {
      this.#maybeCompact();
    }
    return item;
  }

  /** Marks a queued item dead. The caller guarantees it is in this deque and still live. */
  kill(item: T): void {
    item.dead = true;
    this.#dead++;
    this.#maybeCompact();
  }

  #skipDead(): void {
    const items = this.#items;
    while (this.#head < items.length && (items[this.#head] as T).dead) {
      items[this.#head++] = undefined;
      this.#dead--;
    }
  }

  #maybeCompact(): void {
    const items = this.#items;
    const waste = this.#head + this.#dead;
    if (waste < COMPACT_MIN || waste * 2 < items.length) return;
    let w = 0;
    for (let r = this.#head; r < items.length; r++) {
      const item = items[r] as T;
      if (!item.dead) items[w++] = item;
    }
    items.length = w;
    this.#head = 0;
    this.#dead = 0;
  }
}

/** Links of an intrusive ring node. */
export interface RingNode<T> {
  prev: T | null;
  next: T | null;
}
/** Ends and length of an intrusive ring. */
export interface Ring<T> {
  head: T | null;
  tail: T | null;
  size: number;
}

/** Appends `node` at the back. */
export function ringPush<T extends RingNode<T>>(ring: Ring<T>, node: T): void {
  node.prev = ring.tail;
  node.next = null;
  if (ring.tail) ring.tail.next = node;
  else ring.head = node;
  ring.tail = node;
  ring.size++;
}

/** Unlinks `node`, which must be in `ring`. */
export function ringUnlink<T extends RingNode<T>>(ring: Ring<T>, node: T): void {
  if (node.prev) node.prev.next = node.next;
  else ring.head = node.next;
  if (node.next) node.next.prev = node.prev;
  else ring.tail = node.prev;
  node.prev = node.next = null;
  ring.size--;
}

/**
 * Turns the ring so `node` becomes the tail, keeping the cyclic order: the classic round-robin
 * pointer. Nodes skipped before `node` move behind it too, so a blocked node is re-asked once per
 * cycle rather than on every pick, while the picked node still waits a full turn.
 */
export function ringRotateAfter<T extends RingNode<T>>(ring: Ring<T>, node: T): void {
  const head = ring.head;
  const tail = ring.tail;
  const next = node.next;
  if (!head || !tail || !next) return;
  tail.next = head;
  head.prev = tail;
  next.prev = null;
  node.next = null;
  ring.head = next;
  ring.tail = node;
}
