import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { ControlClient, checkSocketOwner, connectControl, preparePrivateDir, privateSocketDir, socketPathOf } from '../../src/cli/control.js';

const dirs: string[] = [];
const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function scratch(): string {
  const dir = mkdtempSync(join(tmpdir(), 'troupe-sock-'));
  dirs.push(dir);
  return dir;
}

async function listening(path: string): Promise<void> {
  const server = createServer((socket) => socket.destroy());
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(path, resolve));
}

const uid = process.getuid!();

describe('the control socket', () => {
  it('of a data dir with a long path goes in the private socket directory, not the shared temp dir', () => {
    const long = join('/data', 'x'.repeat(150));
    expect(socketPathOf(long).startsWith(`${privateSocketDir()}/`)).toBe(true);
    expect(privateSocketDir()).not.toBe(tmpdir());
    expect(socketPathOf('/short')).toBe('/short/control.sock');
  });

  it('is refused when another user owns it: the CLI does not connect', async () => {
    const path = join(scratch(), 'c.sock');
    await listening(path);
    expect(() => checkSocketOwner(path, uid)).not.toThrow();
    expect(() => checkSocketOwner(path, uid + 1)).toThrow(expect.objectContaining({ code: 'CONTROL_FAILED', message: expect.stringContaining(`belongs to uid ${uid}, not to you (uid ${uid + 1})`) }));
    // A file that is not a socket is refused too; connectControl checks before it connects.
    const file = join(scratch(), 'plain');
    mkdirSync(file);
    await expect(connectControl(file)).rejects.toMatchObject({ code: 'CONTROL_FAILED', message: expect.stringContaining('is not a socket') });
  });

  it('goes only in a directory that is ours, a real directory, and closed to others', () => {
    const base = scratch();
    const fresh = join(base, 'fresh');
    preparePrivateDir(fresh, uid);
    const loose = join(base, 'loose');
    mkdirSync(loose);
    chmodSync(loose, 0o777);
    expect(() => preparePrivateDir(loose, uid)).toThrow(expect.objectContaining({ code: 'CONTROL_FAILED', message: expect.stringContaining('lets group or others in') }));
    const link = join(base, 'link');
    symlinkSync(fresh, link);
    expect(() => preparePrivateDir(link, uid)).toThrow(expect.objectContaining({ message: expect.stringContaining('is not a directory (or is a symlink)') }));
    expect(() => preparePrivateDir(fresh, uid + 1)).toThrow(expect.objectContaining({ message: expect.stringContaining(`belongs to uid ${uid}`) }));
  });

  it('reads a reply longer than its cap as CONTROL_FAILED, not as a runtime that hung up', async () => {
    const path = join(scratch(), 'c.sock');
    // Answers every request with a reply of 2,000 characters, sent in pieces.
    const server = createServer((socket) =>
      socket.once('data', (request) => {
        const { id } = JSON.parse(request.toString()) as { id: number };
        const reply = JSON.stringify({ id, ok: true, result: 'x'.repeat(2_000) });
        for (let at = 0; at < reply.length; at += 100) socket.write(reply.slice(at, at + 100));
        socket.write('\n');
      }),
    );
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const open = (maxReply: number) =>
      new Promise<ControlClient>((resolve) => {
        const socket = connect(path, () => resolve(new ControlClient(socket, { maxReply })));
      });
    const roomy = await open(4_000);
    expect(await roomy.call('get')).toBe('x'.repeat(2_000));
    await roomy.close();
    const tight = await open(1_000);
    await expect(tight.call('get')).rejects.toMatchObject({ code: 'CONTROL_FAILED', exitCode: 1, message: 'a reply from the runtime is longer than 1000 characters' });
    await tight.close();
  });
});
