import { spawn } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { requireExecutable, systemPython } from './executables.js';
import { defaultPeerTimeoutMs, libvirtClientEnv, runProcess, type ProcessResult } from './process.js';
import { tempDir, whenEmitted } from './util.js';

export interface VirshOptions {
  uri: string;
  /** Answers to virsh's prompts (e.g. "alice\nsecret\n"); without it stdin is /dev/null. */
  input?: string;
  /** Added to the client environment, e.g. {LIBVIRT_AUTH_FILE: path}. */
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** Runs the real `virsh -c URI ARGS...` asynchronously. */
export async function runVirsh(args: readonly string[], options: VirshOptions): Promise<ProcessResult> {
  const virsh = requireExecutable('virsh', 'libvirt-clients');
  return runProcess(virsh, ['--quiet', '-c', options.uri, ...args], {
    input: options.input,
    env: libvirtClientEnv(options.env),
    timeoutMs: options.timeoutMs ?? defaultPeerTimeoutMs,
  });
}

/** `virsh -c URI event --all --loop` running until stopped; everything it printed so far. */
export interface VirshEventWatcher {
  output(): string;
  /** Resolves once `condition(output)` holds, checked as the watcher prints; fails if it exits first. */
  whenOutput(condition: (output: string) => boolean, timeoutMs: number, what: string): Promise<void>;
  stop(): Promise<string>;
}

export function watchVirshEvents(uri: string, env: NodeJS.ProcessEnv = {}): VirshEventWatcher {
  const child = spawn(requireExecutable('virsh', 'libvirt-clients'), ['-c', uri, 'event', '--all', '--loop'], {
    env: libvirtClientEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const collect = (s: string) => {
    out += s;
    child.emit('output');
  };
  child.stdout.setEncoding('utf8').on('data', collect);
  child.stderr.setEncoding('utf8').on('data', collect);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    output: () => out,
    whenOutput: async (condition, timeoutMs, what) => {
      await whenEmitted(child, ['output', 'close'], () => condition(out) || child.exitCode !== null, timeoutMs, what);
      if (!condition(out)) throw new Error(`virsh event exited before ${what}: ${out}`);
    },
    stop: async () => {
      child.kill('SIGINT');
      await exited;
      return out;
    },
  };
}

export interface PythonOptions {
  env?: NodeJS.ProcessEnv | undefined;
  /** Fed to the script's stdin; without it stdin is /dev/null. */
  input?: string | undefined;
  timeoutMs?: number | undefined;
}

/**
 * Runs a Python script with Debian's /usr/bin/python3 (the one python3-libvirt is built for).
 * The script goes through a private file rather than argv, so credentials inside it do not show
 * up in the process list.
 */
export async function runPython(script: string, options: PythonOptions = {}): Promise<ProcessResult> {
  const python = requireExecutable(systemPython, 'python3-libvirt');
  const directory = await tempDir('vp');
  const scriptPath = join(directory, 'script.py');
  try {
    await writeFile(scriptPath, script, { mode: 0o600 });
    // -I: ignore PYTHON* variables and the user site, so a developer's setup cannot change the run.
    return await runProcess(python, ['-I', scriptPath], {
      input: options.input,
      env: libvirtClientEnv(options.env),
      timeoutMs: options.timeoutMs ?? defaultPeerTimeoutMs,
    });
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

export const pythonLibvirtCommandNames = ['hostname', 'version', 'uri', 'list', 'dominfo', 'dumpxml', 'capabilities'] as const;

export interface PythonLibvirtOptions {
  /** Answer for VIR_CRED_AUTHNAME; when the server asks and this is absent the callback fails. */
  authname?: string;
  /** Answer for VIR_CRED_PASSPHRASE. */
  passphrase?: string;
  /** Answer for VIR_CRED_USERNAME (SASL authzid) when it is offered in `credentialTypes`. */
  username?: string;
  /** Credential types offered to openAuth, by libvirt's names without VIR_CRED_. */
  credentialTypes?: string[];
  /** Open with VIR_CONNECT_RO. */
  readOnly?: boolean;
  /**
   * Run in order after the open: 'hostname', 'version', 'uri', 'list', 'capabilities',
   * 'dominfo NAME', 'dumpxml NAME'.
   */
  commands: string[];
}

export interface PythonDomainSummary {
  name: string;
  id: number;
  uuid: string;
  state: number;
  maxMem: number;
  memory: number;
  vcpus: number;
}

export interface PythonCredentialRequest {
  type: string;
  prompt: string;
  challenge: string | null;
  defresult: string | null;
}

interface PythonLibvirtCommon {
  /** One entry per call of the auth callback, listing the credentials asked in that call. */
  credentialRequests: PythonCredentialRequest[][];
}

export interface PythonLibvirtSuccess extends PythonLibvirtCommon {
  ok: true;
  hostname?: string;
  libVersion?: number;
  version?: number;
  uri?: string;
  capabilities?: string;
  domains?: PythonDomainSummary[];
  domainInfo?: Record<string, PythonDomainSummary>;
  domainXml?: Record<string, string>;
}

export interface PythonLibvirtFailure extends PythonLibvirtCommon {
  ok: false;
  /** 'open' or the command that failed. */
  stage: string;
  error: { code: number; domain: number; message: string };
}

export type PythonLibvirtResult = PythonLibvirtSuccess | PythonLibvirtFailure;

// The script reads its settings from one JSON literal; JSON string escapes are valid Python too.
const pythonLibvirtScriptBody = String.raw`
import json
import sys

import libvirt

CREDENTIAL_NAMES = {getattr(libvirt, name): name[len('VIR_CRED_'):]
                    for name in dir(libvirt) if name.startswith('VIR_CRED_')}
ANSWERS = {'AUTHNAME': SETTINGS['authname'], 'PASSPHRASE': SETTINGS['passphrase'],
           'USERNAME': SETTINGS['username']}
credential_requests = []


def ignore_libvirt_error(_context, _error):
    # Errors are reported once, as JSON; libvirt would otherwise also print them on stderr.
    pass


def answer_credentials(credentials, _opaque):
    credential_requests.append([
        {'type': CREDENTIAL_NAMES.get(c[0], str(c[0])), 'prompt': c[1], 'challenge': c[2],
         'defresult': c[3]} for c in credentials])
    for credential in credentials:
        answer = ANSWERS.get(CREDENTIAL_NAMES.get(credential[0]))
        if answer is None:
            return -1
        credential[4] = answer
    return 0


def describe_domain(domain):
    state, max_memory, memory, vcpus, _cpu_time = domain.info()
    return {'name': domain.name(), 'id': domain.ID(), 'uuid': domain.UUIDString(), 'state': state,
            'maxMem': max_memory, 'memory': memory, 'vcpus': vcpus}


libvirt.registerErrorHandler(ignore_libvirt_error, None)
result = {'ok': True}
stage = 'open'
try:
    offered = [getattr(libvirt, 'VIR_CRED_' + name) for name in SETTINGS['credentialTypes']]
    flags = libvirt.VIR_CONNECT_RO if SETTINGS['readOnly'] else 0
    connection = libvirt.openAuth(SETTINGS['uri'], [offered, answer_credentials, None], flags)
    for stage in SETTINGS['commands']:
        verb, _, argument = stage.partition(' ')
        if verb == 'hostname':
            result['hostname'] = connection.getHostname()
        elif verb == 'version':
            result['libVersion'] = connection.getLibVersion()
            result['version'] = connection.getVersion()
        elif verb == 'uri':
            result['uri'] = connection.getURI()
        elif verb == 'capabilities':
            result['capabilities'] = connection.getCapabilities()
        elif verb == 'list':
            result['domains'] = [describe_domain(d) for d in connection.listAllDomains(0)]
        elif verb == 'dominfo':
            result.setdefault('domainInfo', {})[argument] = describe_domain(connection.lookupByName(argument))
        elif verb == 'dumpxml':
            result.setdefault('domainXml', {})[argument] = connection.lookupByName(argument).XMLDesc(0)
    stage = 'close'
    connection.close()
except libvirt.libvirtError as error:
    result = {'ok': False, 'stage': stage,
              'error': {'code': error.get_error_code(), 'domain': error.get_error_domain(),
                        'message': error.get_error_message()}}
result['credentialRequests'] = credential_requests
json.dump(result, sys.stdout)
sys.stdout.write('\n')
sys.exit(0 if result['ok'] else 1)
`;

/**
 * Builds a python3-libvirt script that opens `uri` with openAuth (offering AUTHNAME and PASSPHRASE
 * by default), runs the commands and prints one JSON object (PythonLibvirtResult). Exit status is
 * 0 on success, 1 on a libvirt error.
 */
export function pythonLibvirtCommands(uri: string, options: PythonLibvirtOptions): string {
  for (const command of options.commands) {
    const [verb, argument, ...rest] = command.split(' ');
    const needsArgument = verb === 'dominfo' || verb === 'dumpxml';
    if (
      !(pythonLibvirtCommandNames as readonly string[]).includes(verb ?? '') ||
      rest.length > 0 ||
      (argument !== undefined) !== needsArgument ||
      argument === ''
    ) {
      throw new Error(
        `unsupported python libvirt command ${JSON.stringify(command)}: use one of hostname, version, uri, list, capabilities, 'dominfo NAME', 'dumpxml NAME'`,
      );
    }
  }
  const credentialTypes = options.credentialTypes ?? ['AUTHNAME', 'PASSPHRASE'];
  for (const type of credentialTypes) {
    if (!/^[A-Z]+$/.test(type)) {
      throw new Error(`credential type ${JSON.stringify(type)} must be a libvirt name without VIR_CRED_, e.g. AUTHNAME`);
    }
  }
  const settings = {
    uri,
    authname: options.authname ?? null,
    passphrase: options.passphrase ?? null,
    username: options.username ?? null,
    credentialTypes,
    readOnly: options.readOnly ?? false,
    commands: options.commands,
  };
  return `SETTINGS = __import__('json').loads(${JSON.stringify(JSON.stringify(settings))})\n${pythonLibvirtScriptBody}`;
}

/** Parses the JSON line printed by a pythonLibvirtCommands script; throws with the raw output otherwise. */
export function parsePythonLibvirtResult(result: ProcessResult): PythonLibvirtResult {
  const lastLine = result.stdout.trim().split('\n').pop() ?? '';
  try {
    const parsed = JSON.parse(lastLine) as PythonLibvirtResult;
    if (typeof parsed === 'object' && parsed !== null && typeof parsed.ok === 'boolean') {
      return parsed;
    }
  } catch {
    // Reported below with the whole output.
  }
  throw new Error(
    `python libvirt script printed no result (exit ${result.code}${result.timedOut ? ', timed out' : ''}): ` +
      `stdout ${JSON.stringify(result.stdout.slice(0, 2000))}, stderr ${JSON.stringify(result.stderr.slice(0, 2000))}`,
  );
}

/** Builds, runs and parses a pythonLibvirtCommands script in one step. */
export async function runPythonLibvirt(uri: string, options: PythonLibvirtOptions & PythonOptions): Promise<PythonLibvirtResult> {
  const { env, input, timeoutMs, ...scriptOptions } = options;
  return parsePythonLibvirtResult(await runPython(pythonLibvirtCommands(uri, scriptOptions), { env, input, timeoutMs }));
}
