// `npm run abuse`: the full abuse run (1000 idle sockets, 6000 × 16 KB env requests, 500 channels…).
import { abuseSuite, FULL } from './cases.js';

abuseSuite(FULL);
