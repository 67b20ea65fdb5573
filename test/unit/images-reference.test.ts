/** Reference parsing and normalisation, checked against what Docker's own parser answers. */
import {
  familiarName,
  familiarString,
  parseAnyReference,
  parseDigest,
  parseNormalizedNamed,
  referenceString,
  withDefaultTag,
} from '../../src/drivers/registry/reference';

const HEX = 'a'.repeat(64);

describe('parseNormalizedNamed', () => {
  it.each([
    ['busybox', 'docker.io/library/busybox', 'busybox'],
    ['busybox:1.36', 'docker.io/library/busybox:1.36', 'busybox:1.36'],
    ['library/busybox', 'docker.io/library/busybox', 'busybox'],
    ['docker.io/busybox', 'docker.io/library/busybox', 'busybox'],
    ['index.docker.io/library/busybox', 'docker.io/library/busybox', 'busybox'],
    ['user/repo', 'docker.io/user/repo', 'user/repo'],
    ['user/repo/deeper', 'docker.io/user/repo/deeper', 'user/repo/deeper'],
    ['localhost/foo', 'localhost/foo', 'localhost/foo'],
    ['localhost:5000/foo:tag', 'localhost:5000/foo:tag', 'localhost:5000/foo:tag'],
    ['127.0.0.1:5000/a/b', '127.0.0.1:5000/a/b', '127.0.0.1:5000/a/b'],
    ['example.com/x', 'example.com/x', 'example.com/x'],
    ['[::1]:5000/x', '[::1]:5000/x', '[::1]:5000/x'],
    [`127.0.0.1:5000/x@sha256:${HEX}`, `127.0.0.1:5000/x@sha256:${HEX}`, `127.0.0.1:5000/x@sha256:${HEX}`],
    [`busybox:tag@sha256:${HEX}`, `docker.io/library/busybox:tag@sha256:${HEX}`, `busybox:tag@sha256:${HEX}`],
    ['a_b.c-d__e---f', 'docker.io/library/a_b.c-d__e---f', 'a_b.c-d__e---f'],
  ])('%s → %s (familiar %s)', (input, full, familiar) => {
    const ref = parseNormalizedNamed(input);
    expect(referenceString(ref)).toBe(full);
    expect(familiarString(ref)).toBe(familiar);
  });

  it('leaves Docker Hub names with more than one component out of library/', () => {
    expect(familiarName(parseNormalizedNamed('docker.io/library/a/b'))).toBe('library/a/b');
  });

  it.each([
    ['Busybox', 'invalid reference format: repository name (library/Busybox) must be lowercase'],
    ['127.0.0.1:5000/Busybox', 'invalid reference format: repository name (Busybox) must be lowercase'],
    ['busybox:', 'invalid reference format'],
    ['busybox:a b', 'invalid reference format'],
    ['-busybox', 'invalid reference format'],
    ['busy//box', 'invalid reference format'],
    ['busybox:' + 't'.repeat(129), 'invalid reference format'],
    ['', 'invalid reference format'],
    [`busybox@sha256:${'a'.repeat(31)}`, 'invalid reference format'],
    [`busybox@sha256:${'a'.repeat(63)}`, 'invalid checksum digest length'],
    [`busybox@sha256:${'a'.repeat(65)}`, 'invalid checksum digest length'],
    [`busybox@md5:${'a'.repeat(32)}`, 'unsupported digest algorithm'],
    [HEX, `invalid repository name (${HEX}), cannot specify 64-byte hexadecimal strings`],
    ['a/'.repeat(130) + 'b', 'repository name must not be more than 255 characters'],
  ])('refuses %j with %j', (input, message) => {
    expect(() => parseNormalizedNamed(input)).toThrow(message);
    try {
      parseNormalizedNamed(input);
    } catch (err) {
      expect((err as { kind: string }).kind).toBe('invalid');
    }
  });
});

describe('parseAnyReference', () => {
  it('treats 64 hex digits and sha256: digests as image IDs', () => {
    expect(parseAnyReference(HEX)).toEqual({ kind: 'digest', digest: `sha256:${HEX}` });
    expect(parseAnyReference(`sha256:${HEX}`)).toEqual({ kind: 'digest', digest: `sha256:${HEX}` });
    expect(parseAnyReference('abc123')).toMatchObject({ kind: 'named' });
  });
});

describe('helpers', () => {
  it('adds :latest only when there is neither tag nor digest', () => {
    expect(familiarString(withDefaultTag(parseNormalizedNamed('busybox')))).toBe('busybox:latest');
    expect(familiarString(withDefaultTag(parseNormalizedNamed(`busybox@sha256:${HEX}`)))).toBe(`busybox@sha256:${HEX}`);
  });

  it('validates digests like go-digest', () => {
    expect(parseDigest(`sha256:${HEX}`)).toBe(`sha256:${HEX}`);
    expect(() => parseDigest('sha256:ABC')).toThrow('invalid checksum digest length');
    expect(() => parseDigest(`sha256:${'G'.repeat(64)}`)).toThrow('invalid checksum digest format');
    expect(() => parseDigest('nocolon')).toThrow('invalid checksum digest format');
  });
});
