/**
 * A small msgpack writer for the records the store writes on every task: task, attempt and run
 * records, the log and the event log. Its output is plain msgpack that msgpackr decodes (the
 * databases keep msgpackr as their decoder), byte for byte the shapes msgpackr writes for these
 * values. It exists because msgpackr's one generic `pack` function, fed every kind of value the
 * store writes, was deoptimized over and over on the hot path (measured: some runs spent a third of
 * the main thread in it), and because a record is written field by field here instead of through
 * an array of its values built first.
 *
 * Values are written into a large chunk and handed out as views of it; a chunk is never written
 * twice (lmdb-js reads a value's bytes later, from the write thread), and a full chunk is simply
 * left to the values that still reference it.
 */
import { Packr } from 'msgpackr';

const CHUNK = 256 * 1024;
/** Values msgpack cannot say natively (Dates, binary, BigInts) are written by msgpackr. */
const fallback = new Packr({ useRecords: false, copyBuffers: true, mapsAsObjects: true });
const objectProto = Object.prototype;
/** The bytes of frozen objects already written (see MsgpackWriter.#frozen). */
const frozenBytes = new WeakMap<object, Uint8Array>();

/** See the module comment. */
export class MsgpackWriter {
  #buf: Buffer = Buffer.allocUnsafeSlow(CHUNK);
  #pos = 0;
  #start = 0;

  /** Writes one value with `write` and returns its bytes (a view that stays valid). */
  encode<T>(value: T, write: (w: MsgpackWriter, value: T) => void): Buffer {
    this.#start = this.#pos;
    write(this, value);
    const out = this.#buf.subarray(this.#start, this.#pos);
    this.#start = this.#pos;
    return out;
  }

  /** Makes room for `bytes` more; a value outgrowing its chunk moves to a new one. */
  #room(bytes: number): void {
    if (this.#pos + bytes <= this.#buf.length) return;
    const written = this.#pos - this.#start;
    const next = Buffer.allocUnsafeSlow(Math.max(CHUNK, 2 * (written + bytes)));
    this.#buf.copy(next, 0, this.#start, this.#pos);
    this.#buf = next;
    this.#start = 0;
    this.#pos = written;
  }

  /** msgpackr's undefined: fixext 1, type 0, data 0. */
  undefined(): void {
    this.#room(3);
    const b = this.#buf;
    b[this.#pos] = 0xd4;
    b[this.#pos + 1] = 0;
    b[this.#pos + 2] = 0;
    this.#pos += 3;
  }

  nil(): void {
    this.#room(1);
    this.#buf[this.#pos++] = 0xc0;
  }

  array(length: number): void {
    this.#room(5);
    if (length < 16) this.#buf[this.#pos++] = 0x90 | length;
    else this.#sized(0xdc, length);
  }

  /** A 16-bit length header (`code`) or, past 65,535, the 32-bit one (`code + 1`); room is the caller's. */
  #sized(code: number, length: number): void {
    const b = this.#buf;
    if (length < 0x10000) {
      b[this.#pos] = code;
      b.writeUInt16BE(length, this.#pos + 1);
      this.#pos += 3;
    } else {
      b[this.#pos] = code + 1;
      b.writeUInt32BE(length, this.#pos + 1);
      this.#pos += 5;
    }
  }

  number(n: number): void {
    this.#room(9);
    const b = this.#buf;
    let p = this.#pos;
    if (n >>> 0 === n) {
      if (n < 0x80) b[p++] = n;
      else if (n < 0x100) {
        b[p++] = 0xcc;
        b[p++] = n;
      } else if (n < 0x10000) {
        b[p++] = 0xcd;
        b[p++] = n >> 8;
        b[p++] = n & 0xff;
      } else {
        b[p] = 0xce;
        b.writeUInt32BE(n, p + 1);
        p += 5;
      }
    } else if (n >> 0 === n) {
      if (n >= -0x20) b[p++] = 0x100 + n;
      else if (n >= -0x80) {
        b[p++] = 0xd0;
        b[p++] = n + 0x100;
      } else if (n >= -0x8000) {
        b[p] = 0xd1;
        b.writeInt16BE(n, p + 1);
        p += 3;
      } else {
        b[p] = 0xd2;
        b.writeInt32BE(n, p + 1);
        p += 5;
      }
    } else {
      b[p] = 0xcb;
      b.writeDoubleBE(n, p + 1);
      p += 9;
    }
    this.#pos = p;
  }

  string(s: string): void {
    const length = s.length;
    this.#room(5 + 3 * length);
    const b = this.#buf;
    // Ids, names, keys and states are ASCII: copied in place behind a one- or two-byte header.
    if (length < 256) {
      const header = length < 32 ? 1 : 2;
      const p = this.#pos + header;
      let i = 0;
      for (; i < length; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        b[p + i] = c;
      }
      if (i === length) {
        if (header === 1) b[this.#pos] = 0xa0 | length;
        else {
          b[this.#pos] = 0xd9;
          b[this.#pos + 1] = length;
        }
        this.#pos = p + length;
        return;
      }
    }
    const bytes = Buffer.byteLength(s, 'utf8');
    if (bytes < 32) b[this.#pos++] = 0xa0 | bytes;
    else if (bytes < 0x100) {
      b[this.#pos++] = 0xd9;
      b[this.#pos++] = bytes;
    } else this.#sized(0xda, bytes);
    b.write(s, this.#pos, bytes, 'utf8');
    this.#pos += bytes;
  }

  /** Any plain value: primitives, arrays and plain objects here; anything else through msgpackr. */
  value(v: unknown): void {
    switch (typeof v) {
      case 'string':
        return this.string(v);
      case 'number':
        return this.number(v);
      case 'boolean':
        this.#room(1);
        this.#buf[this.#pos++] = v ? 0xc3 : 0xc2;
        return;
      case 'undefined':
        return this.undefined();
      case 'object':
        if (v === null) return this.nil();
        if (Array.isArray(v)) {
          this.array(v.length);
          for (let i = 0; i < v.length; i++) this.value(v[i]);
          return;
        }
        if (Object.getPrototypeOf(v) === objectProto) return Object.isFrozen(v) ? this.#frozen(v as Record<string, unknown>) : this.#object(v as Record<string, unknown>);
    }
    this.#raw(fallback.pack(v));
  }

  /**
   * A frozen object of primitives cannot change, so its bytes are written once and copied after
   * that: an agent's retry policy, shared by all its tasks, is in every task record twice (the log
   * and its database). (Freezing is shallow: an object holding objects is written every time.)
   */
  #frozen(o: Record<string, unknown>): void {
    const known = frozenBytes.get(o);
    if (known) return this.#raw(known);
    const from = this.#pos - this.#start;
    this.#object(o);
    for (const key in o) if (typeof o[key] === 'object' && o[key] !== null) return;
    frozenBytes.set(o, Uint8Array.prototype.slice.call(this.#buf, this.#start + from, this.#pos));
  }

  /** A plain object as a map: one pass, its size filled in after (a 16-bit map header, as msgpackr writes). */
  #object(o: Record<string, unknown>): void {
    this.#room(3);
    const at = this.#pos - this.#start;
    this.#buf[this.#pos] = 0xde;
    this.#pos += 3;
    let size = 0;
    for (const key in o) {
      if (!Object.hasOwn(o, key)) continue;
      this.string(key);
      this.value(o[key]);
      size++;
    }
    // The value may have moved to a new chunk meanwhile: its header is found from its start.
    const header = this.#start + at;
    if (size <= 0xffff) {
      this.#buf[header + 1] = size >> 8;
      this.#buf[header + 2] = size & 0xff;
      return;
    }
    // A huge object: its entries move two bytes on for a 32-bit map header.
    this.#room(2);
    const moved = this.#start + at;
    this.#buf.copyWithin(moved + 5, moved + 3, this.#pos);
    this.#buf[moved] = 0xdf;
    this.#buf.writeUInt32BE(size, moved + 1);
    this.#pos += 2;
  }

  #raw(bytes: Uint8Array): void {
    this.#room(bytes.length);
    this.#buf.set(bytes, this.#pos);
    this.#pos += bytes.length;
  }
}

/** Writes a record positionally: `[version, …fields]`, the shape codec.ts reads back. */
export type RecordWriter<T> = (w: MsgpackWriter, record: T) => void;

/**
 * A record writer for these fields, compiled once: one property read per field in a straight line,
 * where a loop over the field names would make every read a keyed (megamorphic) load. Each field's
 * usual kinds (absent, a number, a string) are written without going through `value()`'s
 * dispatch: each of these branches only ever sees one field.
 */
export function recordWriter<T>(version: number, fields: ReadonlyArray<keyof T & string>): RecordWriter<T> {
  assertFieldNames(fields);
  const field = (name: string) =>
    `v = r.${name}; if (v === undefined) w.undefined(); else if (typeof v === 'number') w.number(v); else if (typeof v === 'string') w.string(v); else w.value(v);`;
  const body = ['let v;', `w.array(${fields.length + 1});`, `w.number(${version});`, ...fields.map(field)].join('\n');
  return new Function('w', 'r', body) as RecordWriter<T>;
}

/** Field names compiled into code (see {@link recordWriter}) must be plain identifiers. */
export function assertFieldNames(fields: readonly string[]): void {
  for (const field of fields) if (!/^[A-Za-z_$][\w$]*$/.test(field)) throw new Error(`not a field name: ${field}`);
}
