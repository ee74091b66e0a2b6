/** Built-in `echo` agent: returns its input as the output. The no-op agent of the bench. */
import { defineAgent } from '../agent.js';

export default defineAgent((input: unknown) => input);
