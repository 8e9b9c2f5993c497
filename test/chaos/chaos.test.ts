// The short chaos run inside npm test: an agent killed under an exec, identity hung, the policy service killed, and
// the gateway killed with sessions open. The full run is `npm run chaos` (every case).
import { chaosSuite, SHORT_CASES } from './cases.js';

chaosSuite(SHORT_CASES);
