// The only way into ssh2's internals. Importing this module also corrects `server-sig-algs` for every
// ssh2 server connection created afterwards.
import { fixServerSigAlgs } from './serverSigAlgs.js';

export { AGENT_CHANNEL_TYPE, openAgentChannel } from './agentChannel.js';
export { SSH2_SHIM_VERSION } from './internals.js';
export {
  installUnknownChannelTypeMessage,
  OpenFailure,
  rejectOpen,
  type OpenFailureReason,
} from './openFailure.js';
export { fixServerSigAlgs, serverSigAlgsValue } from './serverSigAlgs.js';

fixServerSigAlgs();
export { completeSessionClose } from './sessionClose.js';
export { DisconnectReason, disconnectWithMessage } from './disconnect.js';
export { registerPqKex } from './kexProviders.js';
export { envPair, execCommand, signalText, subsystemText } from './rawStrings.js';
