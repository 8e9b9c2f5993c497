// The short abuse run inside npm test; the full one is `npm run abuse` (test/abuse/abuse.heavy.ts).
import { abuseSuite, SHORT } from './cases.js';

abuseSuite(SHORT);
