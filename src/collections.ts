/**
 * A Map and a Set for long-lived collections with per-task churn (an entry added and removed for
 * every task): the runtime's task table, its attempts, the governor's queue, the store's overlay.
 *
 * Why not a plain Map: V8 rehashes a Map's table every few hundred adds when entries come and go,
 * and it allocates the new table in the generation of the old one. Once a full GC has moved a
 * long-lived Map's table to the old generation, every table after it is born old, and each one
 * keeps the entries it held when it was replaced reachable for the scavenger until the next full
 * GC. Those entries (task records, attempts, their promises) then survive and get promoted by the
 * thousand. Measured at 3,000 tasks/s: after one full GC the promoted bytes per scavenge went from
 * about 40 KB to 800 KB, and scavenges from 1 ms to 3–8 ms, for good.
 *
 * These wrappers start a fresh Map after as many deletes as the map holds entries (plus a floor),
 * so its table is young again: amortised, under one entry copied per delete.
 *
 * Iterating while deleting is allowed, as with a Map, but a rebuild during the loop leaves the
 * iterator on the old contents: entries deleted after it may still be visited, and entries added
 * after it are not. Callers that delete inside a loop over these re-check what they visit.
 */

/** Deletes before a rebuild, beyond the entry count: keeps small maps from being copied often. */
const FLOOR = 64;

/**
 * A copy of a Map made with forEach: `new Map(map)` goes through the iterator protocol and
 * allocates a [key, value] array per entry (measured: 7% of the runtime's allocations per task).
 */
function copyOf<K, V>(map: Map<K, V>): Map<K, V> {
  const fresh = new Map<K, V>();
  map.forEach((value, key) => fresh.set(key, value));
  return fresh;
}

/** A Map that starts over with a young table once it has seen enough deletes (module comment). */
export class ChurnMap<K, V> implements Iterable<[K, V]> {
  #map = new Map<K, V>();
  #deletes = 0;
  /** How many times the table was started over (for tests). */
  rebuilds = 0;

  get size(): number {
    return this.#map.size;
  }
  get(key: K): V | undefined {
    return this.#map.get(key);
  }
  has(key: K): boolean {
    return this.#map.has(key);
  }
  set(key: K, value: V): this {
    this.#map.set(key, value);
    return this;
  }
  delete(key: K): boolean {
    if (!this.#map.delete(key)) return false;
    if (++this.#deletes > this.#map.size + FLOOR) {
      this.#map = copyOf(this.#map);
      this.#deletes = 0;
      this.rebuilds++;
    }
    return true;
  }
  clear(): void {
    this.#map = new Map();
    this.#deletes = 0;
  }
  keys(): IterableIterator<K> {
    return this.#map.keys();
  }
  values(): IterableIterator<V> {
    return this.#map.values();
  }
  entries(): IterableIterator<[K, V]> {
    return this.#map.entries();
  }
  [Symbol.iterator](): IterableIterator<[K, V]> {
    return this.#map.entries();
  }
}

/** A Set that starts over with a young table once it has seen enough deletes (module comment). */
export class ChurnSet<T> implements Iterable<T> {
  #set = new Set<T>();
  #deletes = 0;
  /** How many times the table was started over (for tests). */
  rebuilds = 0;

  get size(): number {
    return this.#set.size;
  }
  has(value: T): boolean {
    return this.#set.has(value);
  }
  add(value: T): this {
    this.#set.add(value);
    return this;
  }
  delete(value: T): boolean {
    if (!this.#set.delete(value)) return false;
    if (++this.#deletes > this.#set.size + FLOOR) {
      const fresh = new Set<T>();
      this.#set.forEach((value) => fresh.add(value));
      this.#set = fresh;
      this.#deletes = 0;
      this.rebuilds++;
    }
    return true;
  }
  clear(): void {
    this.#set = new Set();
    this.#deletes = 0;
  }
  values(): IterableIterator<T> {
    return this.#set.values();
  }
  [Symbol.iterator](): IterableIterator<T> {
    return this.#set.values();
  }
}
