// Herald's client for Node. A service built on seed 001's RabbitMQ `messageQueue` imports
// `messageQueue` from here instead and keeps its calls; see the repository's README.

import { HeraldClient } from './client.js';

export { HeraldClient } from './client.js';
export { HeraldError } from './errors.js';
export type * from './types.js';

/**
 * A client configured from the environment at its first call: `HERALD_URL`,
 * `HERALD_API_KEY` and, for `getQueueStats`, `HERALD_ADMIN_TOKEN`.
 */
export const messageQueue = new HeraldClient();
