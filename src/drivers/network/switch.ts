/**
 * Control of paddock-switch (paddock-switch.c), the userspace Ethernet switch between VMs, which
 * runs inside the daemon's network namespace. Commands are lines, answered in order with "ok" or
 * "err <why>"; this class serialises them over one control connection.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { unavailable } from '../../errors';
import { logger } from '../../util/log';
import type { NetworkNamespace } from './namespace';

const log = logger('switch');

export class SwitchControl {
  private readonly waiting: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  private buffered = '';
  private stopping = false;

  private constructor(
    private readonly proc: ChildProcess,
    private readonly socket: net.Socket,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('close', () => this.failAll(unavailable('the network switch went away')));
    socket.on('error', () => undefined);
  }

  static async start(ns: NetworkNamespace, binary: string, controlPath: string): Promise<SwitchControl> {
    const [cmd, argv] = ns.command(binary, [controlPath]);
    const proc = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr?.setEncoding('utf8').on('data', (c: string) => {
      stderr = (stderr + c).slice(-2000);
    });
    const deadline = Date.now() + 5000;
    while (!existsSync(controlPath) || !/ready/.test(stderr)) {
      if (proc.exitCode !== null || Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw unavailable(`paddock-switch did not start: ${stderr.trim() || 'timeout'}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(controlPath, () => resolve(s));
      s.once('error', reject);
    });
    const control = new SwitchControl(proc, socket);
    proc.on('exit', (code, signal) => {
      if (!control.stopping) log.error('paddock-switch exited: container networking is down', { code, signal, stderr: stderr.trim() });
    });
    return control;
  }

  /** Sends one command; resolves on "ok", rejects with the switch's reason otherwise. */
  command(...words: string[]): Promise<void> {
    if (words.some((w) => !w || /\s/.test(w))) return Promise.reject(unavailable(`bad switch command ${words.join(' ')}`));
    if (this.socket.destroyed) return Promise.reject(unavailable('the network switch is not running'));
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(`${words.join(' ')}\n`);
    });
  }

  addNetwork(id: string, tap: string | null): Promise<void> {
    return this.command('net', id, tap ?? '-');
  }

  removeNetwork(id: string): Promise<void> {
    return this.command('unnet', id);
  }

  /** The switch listens on `path`; the VMM's NIC connects there. */
  addPort(id: string, path: string): Promise<void> {
    return this.command('port', id, path);
  }

  removePort(id: string): Promise<void> {
    return this.command('unport', id);
  }

  addEndpoint(port: string, vlan: number, network: string): Promise<void> {
    return this.command('ep', port, String(vlan), network);
  }

  removeEndpoint(port: string, vlan: number): Promise<void> {
    return this.command('unep', port, String(vlan));
  }

  stop(): void {
    this.stopping = true;
    this.socket.destroy();
    this.proc.kill('SIGKILL');
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      const w = this.waiting.shift();
      if (!w) continue;
      if (line === 'ok') w.resolve();
      else w.reject(unavailable(`network switch: ${line.replace(/^err /, '')}`));
    }
  }

  private failAll(err: Error): void {
    for (const w of this.waiting.splice(0)) w.reject(err);
  }
}
