/**
 * Container names as Docker makes them: "<adjective>_<notable person>" when none is given,
 * validated against Docker's pattern when one is.
 */
import { randomInt } from 'node:crypto';
import { invalid } from '../../errors';

// A shorter list than moby's, in the same spirit (scientists and engineers).
const adjectives = [
  'admiring', 'adoring', 'agitated', 'amazing', 'angry', 'awesome', 'blissful', 'bold', 'brave', 'busy',
  'charming', 'clever', 'compassionate', 'competent', 'confident', 'cool', 'dazzling', 'determined', 'eager',
  'ecstatic', 'elastic', 'elegant', 'epic', 'festive', 'focused', 'friendly', 'gallant', 'gifted', 'goofy',
  'gracious', 'happy', 'hopeful', 'infallible', 'inspiring', 'jolly', 'keen', 'kind', 'laughing', 'loving',
  'lucid', 'magical', 'modest', 'musing', 'nice', 'nifty', 'nostalgic', 'objective', 'optimistic', 'peaceful',
  'pensive', 'practical', 'priceless', 'quirky', 'quizzical', 'relaxed', 'reverent', 'romantic', 'serene',
  'sharp', 'silly', 'sleepy', 'stoic', 'strange', 'sweet', 'tender', 'thirsty', 'trusting', 'upbeat',
  'vibrant', 'vigilant', 'wizardly', 'wonderful', 'xenodochial', 'youthful', 'zealous', 'zen',
];
const surnames = [
  'albattani', 'allen', 'archimedes', 'babbage', 'banach', 'bardeen', 'bartik', 'bell', 'bhabha', 'blackwell',
  'bohr', 'booth', 'borg', 'bose', 'brahmagupta', 'brattain', 'burnell', 'cannon', 'carson', 'cerf', 'chandrasekhar',
  'curie', 'darwin', 'davinci', 'dijkstra', 'einstein', 'elion', 'engelbart', 'euclid', 'euler', 'faraday',
  'fermat', 'fermi', 'feynman', 'franklin', 'galileo', 'gauss', 'goldberg', 'goodall', 'hamilton', 'hawking',
  'heisenberg', 'hodgkin', 'hopper', 'hypatia', 'jackson', 'johnson', 'kepler', 'knuth', 'lamarr', 'lamport',
  'leakey', 'lovelace', 'lumiere', 'mccarthy', 'meitner', 'mendel', 'mirzakhani', 'morse', 'napier', 'newton',
  'noether', 'pasteur', 'perlman', 'pike', 'poincare', 'ritchie', 'rosalind', 'sammet', 'shannon', 'sinoussi',
  'stallman', 'swartz', 'tesla', 'thompson', 'torvalds', 'turing', 'volhard', 'wescoff', 'wilson', 'wozniak',
];

export function generateName(taken: (name: string) => boolean): string {
  for (let attempt = 0; attempt < 10; attempt++) {
    const name = `${adjectives[randomInt(adjectives.length)]}_${surnames[randomInt(surnames.length)]}`;
    const candidate = attempt < 3 ? name : `${name}${randomInt(10)}`;
    if (!taken(candidate)) return candidate;
  }
  return `paddock_${randomInt(1e9)}`;
}

const VALID_NAME = /^\/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

/** Returns the name without its leading slash; throws dockerd's message for a bad one. */
export function validateName(name: string): string {
  if (!VALID_NAME.test(name)) {
    throw invalid(`Invalid container name (${name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
  }
  return name.replace(/^\//, '');
}
