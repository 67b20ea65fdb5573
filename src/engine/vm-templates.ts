/**
 * VM templates (issue 7): containers start from a saved, booted VM instead of booting one.
 *
 * `VmTemplates` wraps a Hypervisor. For each VM shape (kernel and initramfs contents, memory,
 * vCPUs, kernel arguments, share tags, NIC yes/no) it boots one template VM to the agent's READY —
 * with empty stand-in shares that the guest never mounts, so its 9p devices can migrate — and has
 * the driver save it (`VmSpec.template`, `Vm.saveTemplate`). Every later VM of that shape is a
 * clone restored from it, with its own share paths, sockets and NIC backend. The first message
 * on a clone's agent channel is RESTORED (rootfs-builder/PROTOCOL.md) with fresh host random
 * bytes: the agent reseeds the guest kernel's RNG, then says READY, so the Sandbox above sees a VM
 * that "booted" and sets the clock and hostname as usual.
 *
 * Templates live in the daemon's run dir (`<exec-root>/templates/<key>`) and are rebuilt when the
 * key changes (a new kernel or initramfs hash, QEMU version or accelerator). Whatever cannot be
 * templated (ACPI guests, virtio-fs shares, disks, tap NICs) boots as before, and so does a shape
 * whose template failed to build or restore — a template is only ever a faster path.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { AgentConnection } from '../drivers/agent/agent-client';
import { encodeFrame, encodeTlv, MessageType, Tag } from '../drivers/agent/protocol';
import type { Hypervisor, HypervisorCapabilities, HypervisorInfo, Vm, VmSpec } from '../drivers/hypervisor/hypervisor';
import { logger } from '../util/log';

const log = logger('vm-templates');

/** Bump when what a template holds changes in a way the key does not see. */
const TEMPLATE_FORMAT = 1;
const META_FILE = 'meta.json';
/** The MAC of a template's NIC (every clone's trunk NIC has it: the agent sets per-network MACs on VLAN interfaces). */
export const TEMPLATE_MAC = '02:50:44:00:00:01';
const RESEED_BYTES = 64;

export interface VmTemplateOptions {
  /** Directory for templates (the daemon's run dir); created if missing. */
  root: string;
  /** Time allowed for a template VM to boot to READY. */
  bootTimeoutMs?: number;
}

export interface TemplateMeta {
  key: string;
  format: number;
  kernelSha256: string;
  initrdSha256: string;
  shape: TemplateShape;
  builtAt: string;
  bootMs: number;
  saveMs: number;
  stateBytes: number;
}

/** What a template is keyed on, besides the kernel and initramfs contents. */
export interface TemplateShape {
  hypervisor: string;
  hypervisorVersion: string;
  accelerator: string;
  memoryMiB: number;
  vcpus: number;
  kernelArgs: string[];
  /** Mount tags of the 9p devices, in device order. */
  shareTags: string[];
  /** NIC ids, in device order (at most one: a trunk). */
  nics: string[];
}

/** Why a spec cannot be started from a template, or null when it can. */
export function untemplatable(spec: VmSpec, caps: HypervisorCapabilities): string | null {
  if (!caps.snapshot) return 'the hypervisor driver cannot save VMs';
  if (spec.template) return 'the spec already names a template';
  if (spec.acpi) return 'ACPI guests (Debian cloud kernel) are booted';
  if (spec.disks?.length) return 'VMs with disks are booted';
  if ((spec.shares ?? []).some((s) => (s.kind ?? '9p') !== '9p')) return 'virtio-fs devices cannot migrate';
  if ((spec.nics ?? []).length > 1) return 'more than one NIC';
  if ((spec.nics ?? []).some((n) => n.backend.kind !== 'unix-stream')) return 'tap NICs are booted';
  return null;
}

export function templateShape(spec: VmSpec, info: HypervisorInfo): TemplateShape {
  return {
    hypervisor: info.name,
    hypervisorVersion: info.version,
    accelerator: info.accelerator,
    memoryMiB: spec.memoryMiB,
    vcpus: spec.vcpus,
    kernelArgs: [...(spec.kernelArgs ?? [])],
    shareTags: (spec.shares ?? []).map((s) => s.tag),
    nics: (spec.nics ?? []).map((n) => n.id),
  };
}

/** The template directory name: a hash of everything the saved VM depends on. */
export function templateKey(shape: TemplateShape, kernelSha256: string, initrdSha256: string): string {
  const canonical = JSON.stringify({ format: TEMPLATE_FORMAT, kernelSha256, initrdSha256, ...shape });
  return createHash('sha256').update(canonical).digest('hex').slice(0, 24);
}

interface Template {
  dir: string;
  meta: TemplateMeta;
}

export class VmTemplates implements Hypervisor {
  private readonly ready = new Map<string, Promise<Template>>();
  private readonly failed = new Map<string, string>();
  private readonly restoreFailures = new Map<string, number>();
  private readonly hashes = new Map<string, Promise<string>>();
  private swept = false;

  constructor(
    private readonly inner: Hypervisor,
    private readonly opts: VmTemplateOptions,
  ) {}

  info(): HypervisorInfo {
    return this.inner.info();
  }

  capabilities(): HypervisorCapabilities {
    return this.inner.capabilities();
  }

  async create(spec: VmSpec): Promise<Vm> {
    const why = untemplatable(spec, this.inner.capabilities());
    if (why) {
      log.debug('booting without a template', { id: spec.id, why });
      return this.inner.create(spec);
    }
    const t0 = performance.now();
    let template: Template;
    let key: string;
    try {
      key = await this.keyFor(spec);
      const failure = this.failed.get(key);
      if (failure) return await this.inner.create(spec);
      template = await this.template(key, spec);
    } catch (err) {
      log.warn('VM template unavailable; booting', { id: spec.id, error: (err as Error).message });
      return this.inner.create(spec);
    }
    const t1 = performance.now();
    let vm: Vm;
    try {
      vm = await this.inner.create({ ...spec, template: { mode: 'restore', dir: template.dir } });
    } catch (err) {
      // A template that does not restore is dropped (rebuilt on the next start, e.g. after the
      // driver's device set changed); this VM boots. A rebuilt one that fails too is given up.
      log.warn('VM template did not restore; dropping it and booting', { id: spec.id, template: key, error: (err as Error).message });
      this.ready.delete(key);
      const failures = (this.restoreFailures.get(key) ?? 0) + 1;
      this.restoreFailures.set(key, failures);
      if (failures >= 2) this.failed.set(key, (err as Error).message);
      await fs.rm(template.dir, { recursive: true, force: true }).catch(() => undefined);
      return this.inner.create(spec);
    }
    // First message to the clone, before anything can read its RNG: see PROTOCOL.md, RESTORED.
    vm.agentChannel.write(encodeFrame(MessageType.Restored, 0, encodeTlv([[Tag.Data, randomBytes(RESEED_BYTES)]])));
    vm.startTimings = { ...vm.startTimings, templateWaitMs: t1 - t0, restoreTotalMs: performance.now() - t1 };
    return vm;
  }

  /** Builds the template for a spec's shape now (at daemon start), so the first container does not wait. */
  async prewarm(spec: VmSpec): Promise<void> {
    if (untemplatable(spec, this.inner.capabilities())) return;
    const key = await this.keyFor(spec);
    await this.template(key, spec);
  }

  private async keyFor(spec: VmSpec): Promise<string> {
    const [k, i] = await Promise.all([this.hash(spec.kernelPath), this.hash(spec.initrdPath)]);
    return templateKey(templateShape(spec, this.inner.info()), k, i);
  }

  private template(key: string, spec: VmSpec): Promise<Template> {
    let p = this.ready.get(key);
    if (!p) {
      p = this.loadOrBuild(key, spec);
      this.ready.set(key, p);
      p.catch((err: Error) => {
        this.ready.delete(key);
        this.failed.set(key, err.message);
        log.warn('VM template could not be built; containers of this shape boot', { template: key, error: err.message });
      });
    }
    return p;
  }

  private async loadOrBuild(key: string, spec: VmSpec): Promise<Template> {
    await fs.mkdir(this.opts.root, { recursive: true, mode: 0o700 });
    const dir = path.join(this.opts.root, key);
    try {
      const meta = JSON.parse(await fs.readFile(path.join(dir, META_FILE), 'utf8')) as TemplateMeta;
      if (meta.key === key && meta.format === TEMPLATE_FORMAT) return { dir, meta };
    } catch {
      // not built yet (or a leftover without its meta): build it
    }
    const [kernelSha256, initrdSha256] = await Promise.all([this.hash(spec.kernelPath), this.hash(spec.initrdPath)]);
    await this.sweep(kernelSha256, initrdSha256);
    const meta = await this.build(key, spec, dir, kernelSha256, initrdSha256);
    return { dir, meta };
  }

  private async build(key: string, spec: VmSpec, dir: string, kernelSha256: string, initrdSha256: string): Promise<TemplateMeta> {
    const work = await fs.mkdtemp(path.join(this.opts.root, `${key}.build-`));
    const empty = path.join(work, 'empty');
    await fs.mkdir(empty, { mode: 0o755 });
    // A NIC backend for the template's NIC to connect to; the template never sends on it.
    const nicServer = spec.nics?.length ? await listenDiscard(path.join(work, 'nic.sock')) : undefined;
    let vm: Vm | undefined;
    let agent: AgentConnection | undefined;
    try {
      const t0 = performance.now();
      vm = await this.inner.create({
        ...spec,
        id: `template-${key.slice(0, 12)}`,
        shares: (spec.shares ?? []).map((s) => ({ tag: s.tag, hostPath: empty, kind: '9p' as const })),
        nics: (spec.nics ?? []).map((n) => ({ id: n.id, mac: TEMPLATE_MAC, backend: { kind: 'unix-stream' as const, path: path.join(work, 'nic.sock') } })),
        template: { mode: 'boot', dir: work },
      });
      if (!vm.saveTemplate) throw new Error(`the ${this.inner.info().name} driver cannot save a VM`);
      agent = new AgentConnection(vm.agentChannel);
      const bootTimeout = this.opts.bootTimeoutMs ?? 60_000;
      await Promise.race([
        agent.waitReady(bootTimeout),
        vm.exited.then((e) => {
          throw new Error(`template VM exited before READY (code ${e.code}): ${e.consoleTail.trim().split('\n').slice(-5).join(' | ')}`);
        }),
      ]);
      const t1 = performance.now();
      await vm.saveTemplate();
      const t2 = performance.now();
      await vm.kill();
      agent.close();
      const stateBytes = (await fs.stat(path.join(work, 'state'))).size;
      const meta: TemplateMeta = {
        key,
        format: TEMPLATE_FORMAT,
        kernelSha256,
        initrdSha256,
        shape: templateShape(spec, this.inner.info()),
        builtAt: new Date().toISOString(),
        bootMs: Math.round(t1 - t0),
        saveMs: Math.round(t2 - t1),
        stateBytes,
      };
      await fs.rm(empty, { recursive: true, force: true });
      await fs.rm(path.join(work, 'nic.sock'), { force: true });
      await fs.writeFile(path.join(work, META_FILE), JSON.stringify(meta, null, 2) + '\n', { mode: 0o600 });
      // The RAM file is never written again: clones map it copy-on-write.
      await fs.chmod(path.join(work, 'memory'), 0o400);
      await fs.rm(dir, { recursive: true, force: true });
      await fs.rename(work, dir);
      log.info('VM template built', { template: key, bootMs: meta.bootMs, saveMs: meta.saveMs, stateBytes, memoryMiB: spec.memoryMiB, shares: meta.shape.shareTags.length, nics: meta.shape.nics.length });
      return meta;
    } catch (err) {
      agent?.close();
      await vm?.kill();
      await fs.rm(work, { recursive: true, force: true });
      throw err;
    } finally {
      nicServer?.close();
    }
  }

  /** Removes unfinished builds and templates of another kernel or initramfs. */
  private async sweep(kernelSha256: string, initrdSha256: string): Promise<void> {
    if (this.swept) return;
    this.swept = true;
    for (const name of await fs.readdir(this.opts.root).catch(() => [] as string[])) {
      const p = path.join(this.opts.root, name);
      if (!/^[0-9a-f]{24}(\.build-.*)?$/.test(name)) continue;
      if (name.includes('.build-')) {
        await fs.rm(p, { recursive: true, force: true });
        continue;
      }
      try {
        const meta = JSON.parse(await fs.readFile(path.join(p, META_FILE), 'utf8')) as TemplateMeta;
        if (meta.kernelSha256 === kernelSha256 && meta.initrdSha256 === initrdSha256) continue;
      } catch {
        // no readable meta: not a finished template
      }
      log.info('removing an old VM template', { template: name });
      await fs.rm(p, { recursive: true, force: true });
    }
  }

  /** sha256 of a file's contents, computed once per path, size and mtime. */
  private async hash(file: string): Promise<string> {
    const st = await fs.stat(file);
    const id = `${file}\0${st.size}\0${st.mtimeMs}`;
    let p = this.hashes.get(id);
    if (!p) {
      p = sha256File(file);
      this.hashes.set(id, p);
      p.catch(() => this.hashes.delete(id));
    }
    return p;
  }
}

function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (c) => h.update(c))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

function listenDiscard(socketPath: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((c) => {
      c.resume();
      c.on('error', () => undefined);
    });
    server.on('error', reject);
    server.listen(socketPath, () => resolve(server));
  });
}

/** The daemon's hypervisor: wrapped in VM templates unless turned off (`--vm-templates=false`). */
export function withVmTemplates(driver: Hypervisor, opts: VmTemplateOptions & { enabled: boolean }): Hypervisor {
  if (!opts.enabled) return driver;
  return new VmTemplates(driver, opts);
}
