/**
 * The config of a committed image, as dockerd builds it: what the request (and its `changes`)
 * set wins; whatever it leaves unset comes from the container's own config.
 */
import type { ImageRuntimeConfig } from '../image-backend';

const envKey = (e: string) => e.split('=')[0];

export function mergeCommitConfig(user: ImageRuntimeConfig, container: ImageRuntimeConfig): ImageRuntimeConfig {
  const out: ImageRuntimeConfig = structuredClone(user);
  if (!out.User) out.User = container.User;
  if (!out.ExposedPorts || Object.keys(out.ExposedPorts).length === 0) out.ExposedPorts = container.ExposedPorts;
  else for (const p of Object.keys(container.ExposedPorts ?? {})) out.ExposedPorts[p] ??= {};
  if (!out.Env || out.Env.length === 0) out.Env = container.Env;
  else for (const e of container.Env ?? []) if (!out.Env.some((u) => envKey(u) === envKey(e))) out.Env.push(e);
  out.Labels = { ...(container.Labels ?? {}), ...(out.Labels ?? {}) };
  if (!out.Entrypoint || out.Entrypoint.length === 0) {
    if (!out.Cmd || out.Cmd.length === 0) {
      out.Cmd = container.Cmd;
      if (container.ArgsEscaped) out.ArgsEscaped = container.ArgsEscaped;
    }
    if (out.Entrypoint == null) out.Entrypoint = container.Entrypoint;
  }
  if (!out.Healthcheck && container.Healthcheck) out.Healthcheck = container.Healthcheck;
  if (!out.WorkingDir) out.WorkingDir = container.WorkingDir;
  if (!out.Volumes || Object.keys(out.Volumes).length === 0) out.Volumes = container.Volumes;
  else for (const v of Object.keys(container.Volumes ?? {})) out.Volumes[v] ??= {};
  if (!out.StopSignal) out.StopSignal = container.StopSignal;
  if (!out.Shell && container.Shell) out.Shell = container.Shell;
  if (!out.OnBuild && container.OnBuild) out.OnBuild = container.OnBuild;
  // Unset fields are left out rather than written as undefined.
  for (const k of Object.keys(out) as Array<keyof ImageRuntimeConfig>) if (out[k] === undefined) delete out[k];
  return out;
}
