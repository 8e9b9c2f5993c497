// Command-line flags of `ssh-proxy`, parsed the way Go's flag package does it (reference-behaviour.md §1):
// `-x` and `--x` are equivalent, values come as `-config x` or `-config=x`, `-h` prints the usage to
// stderr and exits 0, anything unknown prints the usage and exits 2. Pure, so it is unit-testable.
import { DEFAULT_CONFIG_PATH } from '../config/load.js';
import { COMMIT, DESCRIPTION, VERSION } from '../ops/version.js';

export type ParsedArgs =
  | { kind: 'run'; configPath: string; logtext: boolean; child: boolean }
  /** Ours: `ssh-proxy recordings …` reads the local session store (src/cli/recordings.ts). */
  | { kind: 'recordings'; argv: string[] }
  | { kind: 'exit'; code: number; stdout?: string; stderr?: string };

export const USAGE = `Usage: ssh-proxy [flags]

${DESCRIPTION}

Flags (-flag and --flag are equivalent; values as "--config path" or "--config=path"):
  --config <path>  YAML configuration file (default "${DEFAULT_CONFIG_PATH}")
  --logtext        human-readable console logs instead of JSON
  -v               print the version and exit
  -h               print this help and exit

Commands:
  recordings list|play|export   recordings of the local stack (ssh-proxy recordings -h)
`;

const BOOL_FLAGS = new Set(['logtext', 'v', 'child']);
const STRING_FLAGS = new Set(['config']);
const HELP_FLAGS = new Set(['h', 'help']);

function usageError(problem: string): ParsedArgs {
  return { kind: 'exit', code: 2, stderr: `${problem}\n${USAGE}` };
}

// Go's strconv.ParseBool.
function parseBool(s: string): boolean | undefined {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(s)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(s)) return false;
  return undefined;
}

/** Parses the arguments after the script name (`process.argv.slice(2)`). */
export function parseArgs(argv: readonly string[]): ParsedArgs {
  // A subcommand only as the first word, so every reference flag keeps its meaning.
  if (argv[0] === 'recordings') return { kind: 'recordings', argv: argv.slice(1) };
  let configPath = DEFAULT_CONFIG_PATH;
  const bools: Record<string, boolean> = { logtext: false, v: false, child: false };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--') {
      if (i + 1 < argv.length) return usageError(`unexpected argument: ${argv[i + 1] ?? ''}`);
      break;
    }
    if (!arg.startsWith('-') || arg === '-') return usageError(`unexpected argument: ${arg}`);
    const body = arg.startsWith('--') ? arg.slice(2) : arg.slice(1);
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    const inline = eq >= 0 ? body.slice(eq + 1) : undefined;
    if (name === '' || name.startsWith('-')) return usageError(`bad flag syntax: ${arg}`);

    if (HELP_FLAGS.has(name)) return { kind: 'exit', code: 0, stderr: USAGE };
    if (BOOL_FLAGS.has(name)) {
      const value = inline === undefined ? true : parseBool(inline);
      if (value === undefined) return usageError(`invalid boolean value "${inline ?? ''}" for -${name}`);
      bools[name] = value;
    } else if (STRING_FLAGS.has(name)) {
      let value = inline;
      if (value === undefined) {
        if (i + 1 >= argv.length) return usageError(`flag needs an argument: -${name}`);
        value = argv[++i] ?? '';
      }
      configPath = value;
    } else {
      return usageError(`flag provided but not defined: -${name}`);
    }
  }

  if (bools.v)
    return { kind: 'exit', code: 0, stdout: `ssh-proxy version: ${VERSION} (commit: ${COMMIT})\n` };
  return { kind: 'run', configPath, logtext: bools.logtext === true, child: bools.child === true };
}
