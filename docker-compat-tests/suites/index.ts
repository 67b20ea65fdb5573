/** Every suite, in the order a run takes them (the one that may crash a daemon last). */
import type { Suite } from '../lib/scenario';
import { composeSuite } from './compose';
import { dockerCliSuite } from './docker-cli';
import { dockerPySuite } from './docker-py';
import { dockerodeSuite } from './dockerode';
import { httpApiSuite } from './http-api';
import { resilienceSuite } from './resilience';

export function allSuites(): Suite[] {
  return [httpApiSuite(), dockerCliSuite('28'), dockerCliSuite('20.10'), composeSuite(), dockerodeSuite(), dockerPySuite(), resilienceSuite()];
}
