// The short chaos run inside npm test: one fault of each kind (agent killed, agent stopped, a hung
// and a killed service, the gateway killed). The full run is `npm run chaos` (every case).
import { chaosSuite, SHORT_CASES } from './cases.js';

chaosSuite(SHORT_CASES);
