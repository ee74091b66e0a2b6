/**
 * How the objects made for every task are allocated, so that V8 never pretenures them.
 *
 * V8 tracks the objects each object or array literal makes, and once nearly all of them outlive a
 * scavenge it allocates every later one straight in the old generation, for as long as the process
 * runs. A closed loop of a thousand tasks moves as one wave (see the README's Benchmarks), so a
 * scavenge that falls inside a wave finds all of its objects alive, and the literals that make
 * per-task objects were pretenured (`--trace-pretenuring`, and `%DebugPrint` of the function that
 * holds the site). Every later object then died in the old generation and, until the next full GC,
 * kept the young objects it pointed at alive through scavenges, so they were promoted as well: about
 * a kilobyte of old generation per task, and a full GC every 0.7 s at half load, each of which held
 * commits and starts back by several milliseconds.
 *
 * Objects made by a constructor, or as a spread of another object, are never pretenured. So
 * per-task objects are made either way:
 * - a fixed shape: a spread of a template that has every field, which then only overwrites them
 *   (as fast as a literal; `createTaskRecord` in store/records.ts, `taskChange` in steps/types.ts);
 * - a shape with optional fields: a constructor from {@link plainConstructor}, which adds the
 *   fields it is given in its body, where V8 sizes the object for them. (A spread of a template
 *   followed by new fields puts them out of the object, and was slower than the literal.)
 * - an object only the runtime sees, such as a batch: a class.
 * Arrays that live as long as a batch are made by {@link arrayForBatch}.
 */

/**
 * An empty array that V8 will not pretenure. `[]` is a literal with an allocation site of its own
 * too, and V8 pretenured the arrays that hold a batch's records and events until its commit lands,
 * which then held those records through scavenges as the objects above did. `Array.of()` has no
 * site, but costs about 60 ns more than `[]`: it is for arrays made once a batch, not once a task.
 */
export function arrayForBatch<T>(): T[] {
  return Array.of<T>();
}

/**
 * Makes `init` a constructor whose objects are plain objects: their prototype is `Object.prototype`,
 * as a literal's is, so they print, compare (`deepStrictEqual`, `toStrictEqual`), clone and
 * serialize as literals do. For objects a caller sees (tasks, events). `init` must be a `function`
 * of its own (not an arrow, not shared by two kinds of object): it sets the fields on `this`.
 */
export function plainConstructor<A extends unknown[], T extends object>(init: (this: T, ...args: A) => void): new (...args: A) => T {
  // A function's prototype can be replaced; a class's cannot.
  init.prototype = Object.prototype;
  return init as unknown as new (...args: A) => T;
}
