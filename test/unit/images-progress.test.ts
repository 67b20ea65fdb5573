/** dockerd's progress lines, go-units sizes, filter matching and commit --change parsing. */
import { applyChanges, words } from '../../src/engine/images/changes';
import { mergeCommitConfig } from '../../src/engine/images/commit-config';
import { danglingFilter, globMatch, labelsMatch, referenceMatches, validateFilters } from '../../src/engine/images/filters';
import { errorMessage, formatMessage, humanSize, LayerProgress, progressBar, type JsonMessage } from '../../src/engine/images/progress';
import { parseNormalizedNamed } from '../../src/drivers/registry/reference';

describe('progress', () => {
  it('sizes like go-units HumanSize', () => {
    expect(humanSize(0)).toBe('0B');
    expect(humanSize(999)).toBe('999B');
    expect(humanSize(1000)).toBe('1kB');
    expect(humanSize(32768)).toBe('32.77kB');
    expect(humanSize(772788)).toBe('772.8kB');
    expect(humanSize(1984305)).toBe('1.984MB');
    expect(humanSize(5_000_000_000)).toBe('5GB');
  });

  it('draws the legacy bar dockerd puts in "progress"', () => {
    expect(progressBar(32768, 772788)).toBe(`[==>${' '.repeat(48)}]  32.77kB/772.8kB`);
    expect(progressBar(10, 10)).toBe(`[${'='.repeat(50)}>] ${'10B'.padStart(8)}/10B`);
    expect(progressBar(0, 0)).toBe('');
  });

  it('writes keys in dockerd order, progressDetail kept even when empty', () => {
    expect(formatMessage({ id: 'abc', progressDetail: {}, status: 'Pulling fs layer' })).toBe(
      '{"status":"Pulling fs layer","progressDetail":{},"id":"abc"}\n',
    );
    expect(formatMessage({ status: 'Digest: sha256:x' })).toBe('{"status":"Digest: sha256:x"}\n');
    expect(formatMessage(errorMessage(new Error('boom')))).toBe('{"errorDetail":{"message":"boom"},"error":"boom"}\n');
  });

  it('rate-limits byte updates but always reports completion', () => {
    const seen: JsonMessage[] = [];
    const p = new LayerProgress({ write: (m) => seen.push(m) }, 'abc');
    p.update('Downloading', 1, 100);
    p.update('Downloading', 2, 100);
    p.update('Downloading', 100, 100);
    expect(seen.map((m) => m.progressDetail)).toEqual([{ current: 1, total: 100 }, { current: 100, total: 100 }]);
  });
});

describe('filters', () => {
  it('globs like Go path.Match against name:tag and name', () => {
    expect(globMatch('busy*', 'busybox')).toBe(true);
    expect(globMatch('*', 'a/b')).toBe(false);
    expect(globMatch('a/*', 'a/b')).toBe(true);
    expect(globMatch('b?sybox', 'busybox')).toBe(true);
    expect(globMatch('[ab]usybox', 'busybox')).toBe(true);
    expect(referenceMatches('busybox', parseNormalizedNamed('busybox:1'))).toBe(true);
    expect(referenceMatches('busybox:1', parseNormalizedNamed('busybox:1'))).toBe(true);
    expect(referenceMatches('busybox:2', parseNormalizedNamed('busybox:1'))).toBe(false);
  });

  it('checks labels, dangling values and filter names as dockerd does', () => {
    expect(labelsMatch({ a: '1', b: '2' }, ['a', 'b=2'])).toBe(true);
    expect(labelsMatch({ a: '1' }, ['a=2'])).toBe(false);
    expect(labelsMatch({ a: '1' }, ['a'], true)).toBe(false);
    expect(danglingFilter({ dangling: ['true'] })).toBe(true);
    expect(danglingFilter({ dangling: ['0'] })).toBe(false);
    expect(() => danglingFilter({ dangling: ['maybe'] })).toThrow("invalid filter 'dangling=maybe'");
    expect(() => validateFilters({ foo: ['x'] }, 'list')).toThrow("invalid filter 'foo'");
    expect(() => validateFilters({ 'label!': ['x'] }, 'list')).toThrow("invalid filter 'label!'");
    expect(() => validateFilters({ 'label!': ['x'] }, 'prune')).not.toThrow();
  });
});

describe('commit --change', () => {
  it('applies Dockerfile instructions to a config', () => {
    const config = applyChanges({ Env: ['A=1'], WorkingDir: '/srv' }, [
      'CMD ["echo", "hi"]',
      'ENTRYPOINT /bin/run --flag',
      'ENV A=2 B="two words"',
      'ENV LEGACY spaced value',
      'LABEL com.example.x=y',
      'EXPOSE 80 53/udp',
      'VOLUME ["/data"]',
      'WORKDIR app',
      'USER nobody',
      'STOPSIGNAL SIGTERM',
    ]);
    expect(config).toEqual({
      Cmd: ['echo', 'hi'],
      Entrypoint: ['/bin/sh', '-c', '/bin/run --flag'],
      Env: ['A=2', 'B=two words', 'LEGACY=spaced value'],
      Labels: { 'com.example.x': 'y' },
      ExposedPorts: { '80/tcp': {}, '53/udp': {} },
      Volumes: { '/data': {} },
      WorkingDir: '/srv/app',
      User: 'nobody',
      StopSignal: 'SIGTERM',
    });
  });

  it('refuses instructions commit does not accept', () => {
    expect(() => applyChanges({}, ['RUN rm -rf /'])).toThrow('RUN is not a valid change command');
  });

  it('splits words with quotes and escapes', () => {
    expect(words(`a "b c" 'd e' f\\ g`)).toEqual(['a', 'b c', 'd e', 'f g']);
  });

  it('fills what the request leaves unset from the container config', () => {
    expect(
      mergeCommitConfig({ Env: ['A=2'], Labels: { l: 'new' } }, { Env: ['A=1', 'PATH=/bin'], Cmd: ['sh'], Labels: { l: 'old', k: 'v' }, WorkingDir: '/w' }),
    ).toEqual({ Env: ['A=2', 'PATH=/bin'], Cmd: ['sh'], Labels: { l: 'new', k: 'v' }, WorkingDir: '/w' });
  });
});
