/**
 * Running scripts inside a guest through the QEMU guest agent (virtio-serial channel
 * `org.qemu.guest_agent.0`, `virsh qemu-agent-command`). Chosen over ssh because it needs no
 * network, no keys and no sshd in the guest: the tiny busybox guest and any distribution image
 * with the `qemu-guest-agent` package speak it (docs/ci.md).
 *
 * Everything goes to virsh on stdin, never in argv: a job script carries secrets (CI_JOB_TOKEN),
 * and argv is world-readable in /proc. The script is handed to the guest as the stdin of the
 * agent's guest-exec; its output goes to a file in the guest that we read as it grows, which is
 * what streams it back.
 */
import { randomBytes } from 'node:crypto';
import type { Virsh } from './virsh.js';
import { virshQuote } from './virsh.js';

export const AGENT_CHANNEL = 'org.qemu.guest_agent.0';

export class AgentError extends Error {
  override readonly name = 'AgentError';
}

/** virsh's own parser: single quotes, and a `'` can only appear inside JSON strings, where \u0027 means the same. */
function agentArg(payload: unknown): string {
  return `'${JSON.stringify(payload).replace(/'/g, '\\u0027')}'`;
}

function agentCommand(domain: string, payload: unknown, timeoutSeconds = 10): string {
  return `qemu-agent-command --timeout ${timeoutSeconds} ${virshQuote(domain)} ${agentArg(payload)}`;
}

function parseReturn<T>(out: string | undefined, what: string, stderr: string): T {
  if (!out) throw new AgentError(`guest agent: ${what} failed${stderr ? `: ${stderr.trim().split('\n').pop()}` : ''}`);
  try {
    return (JSON.parse(out) as { return: T }).return;
  } catch {
    throw new AgentError(`guest agent: ${what}: unreadable answer`);
  }
}

export interface ScriptRun {
  /** Called with each piece of output (stdout and stderr interleaved, as written). */
  onOutput: (chunk: Buffer) => void;
  /** Time between looks at the guest; each look is one virsh process. */
  pollMs?: number;
  sleep?: (ms: number) => Promise<void>;
  /** Aborted: the script's process group gets SIGTERM, then SIGKILL after killGraceMs. */
  signal?: AbortSignal;
  killGraceMs?: number;
}

/** How long a SIGKILLed script may take to be reported gone before we stop asking. */
const KILL_WAIT_MS = 5000;

/**
 * The shell guest-exec runs: it saves the script (its stdin), starts it in a session of its own
 * (`setsid`, so its pid is the process group a cancel signals; plain background job where there
 * is no setsid), appends its output to `<file>.out`, records its pid in `<file>.pid` and exits
 * with its status.
 */
function wrapper(file: string, dir: string): string {
  return [
    `mkdir -p ${dir} && : > ${file}.out && cat > ${file}.sh || exit 125`,
    `case "$(head -c 2 ${file}.sh)" in '#!') chmod +x ${file}.sh; set -- ${file}.sh ;; *) set -- sh ${file}.sh ;; esac`,
    `if command -v setsid >/dev/null 2>&1; then setsid "$@" >> ${file}.out 2>&1 < /dev/null & else "$@" >> ${file}.out 2>&1 < /dev/null & fi`,
    `echo $! > ${file}.pid`,
    `wait $!`,
    `rc=$?; rm -f ${file}.sh ${file}.pid; exit $rc`,
  ].join('\n');
}

/** Signals the script's process group (its own pid, when it could not get a group). */
function killer(file: string, signal: 'TERM' | 'KILL'): string {
  return `p=$(cat ${file}.pid 2>/dev/null) && { kill -${signal} -$p 2>/dev/null || kill -${signal} $p; }`;
}

export function createGuestAgent(virsh: Virsh) {
  const one = async <T>(domain: string, payload: unknown, what: string, timeoutSeconds?: number): Promise<T> => {
    const r = await virsh.batch([agentCommand(domain, payload, timeoutSeconds)]);
    return parseReturn<T>(r.out[0], what, r.stderr);
  };

  /** Opens a file the exec'd shell makes first; gives up once the shell has exited without it. */
  const openWhenMade = async (
    path: string,
    pid: number,
    domain: string,
    sleep: (ms: number) => Promise<void>,
  ): Promise<number> => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await one<number>(
          domain,
          { execute: 'guest-file-open', arguments: { path, mode: 'r' } },
          'guest-file-open',
        );
      } catch (error) {
        if (!/No such file/.test((error as Error).message) || attempt >= 200) throw error;
        const status = await one<{ exited: boolean; exitcode?: number }>(
          domain,
          { execute: 'guest-exec-status', arguments: { pid } },
          'guest-exec-status',
        );
        if (status.exited)
          throw new AgentError(
            `guest agent: the job shell exited (${status.exitcode ?? 'signal'}) before making ${path}`,
          );
        await sleep(50);
      }
    }
  };

  return {
    /** True when the agent in the guest answers (it is up and the channel connected). */
    async ping(domain: string): Promise<boolean> {
      try {
        await one(domain, { execute: 'guest-ping' }, 'guest-ping', 3);
        return true;
      } catch {
        return false;
      }
    },

    /** Runs `script` in the guest (by its `#!` line, else with sh); resolves with its exit status. */
    async runScript(domain: string, script: string, run: ScriptRun): Promise<number> {
      const sleep = run.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
      const pollMs = run.pollMs ?? 250;
      const signal = run.signal;
      const id = randomBytes(6).toString('hex');
      const dir = `/tmp/corral-job`;
      const file = `${dir}/${id}`;
      // guest-exec returns once the shell is forked, not once it made the output file: the file
      // is opened below with a retry (a busybox guest is usually first, Debian's qemu-ga is not).
      const started = await one<{ pid: number }>(
        domain,
        {
          execute: 'guest-exec',
          arguments: {
            path: '/bin/sh',
            arg: ['-c', wrapper(file, dir)],
            'input-data': Buffer.from(script).toString('base64'),
            'capture-output': false,
          },
        },
        'guest-exec',
      );
      const handle = await openWhenMade(`${file}.out`, started.pid, domain, sleep);
      const read = agentCommand(domain, { execute: 'guest-file-read', arguments: { handle, count: 65536 } });
      const kill = (which: 'TERM' | 'KILL') =>
        one(
          domain,
          { execute: 'guest-exec', arguments: { path: '/bin/sh', arg: ['-c', killer(file, which)] } },
          'kill',
        ).catch(() => undefined);
      // A cancel wakes the loop at once rather than after the current sleep.
      const pause = (ms: number) =>
        new Promise<void>((resolve) => {
          const done = () => {
            signal?.removeEventListener('abort', done);
            resolve();
          };
          signal?.addEventListener('abort', done, { once: true });
          void sleep(ms).then(done);
        });
      let killed: { which: 'TERM' | 'KILL'; at: number } | undefined;
      try {
        for (;;) {
          if (signal?.aborted) {
            const now = Date.now();
            if (!killed) {
              await kill('TERM');
              killed = { which: 'TERM', at: now };
            } else if (killed.which === 'TERM' && now - killed.at > (run.killGraceMs ?? 5000)) {
              await kill('KILL');
              killed = { which: 'KILL', at: now };
            } else if (killed.which === 'KILL' && now - killed.at > KILL_WAIT_MS) return 128 + 9;
          }
          let r;
          try {
            r = await virsh.batch([
              agentCommand(domain, { execute: 'guest-exec-status', arguments: { pid: started.pid } }),
              read,
            ]);
          } catch (error) {
            // gitlab-runner signals our whole process group: a virsh of ours may have died of it.
            if (!signal?.aborted) throw error;
            await pause(pollMs);
            continue;
          }
          let status;
          let chunk;
          try {
            status = parseReturn<{ exited: boolean; exitcode?: number; signal?: number }>(
              r.out[0],
              'guest-exec-status',
              r.stderr,
            );
            chunk = parseReturn<{ count: number; 'buf-b64': string; eof: boolean }>(
              r.out[1],
              'guest-file-read',
              r.stderr,
            );
          } catch (error) {
            if (!signal?.aborted) throw error;
            await pause(pollMs);
            continue;
          }
          if (chunk.count > 0) run.onOutput(Buffer.from(chunk['buf-b64'], 'base64'));
          if (status.exited) {
            // Drain what was written between the two looks.
            while (chunk.count > 0 && !chunk.eof) {
              chunk = parseReturn<{ count: number; 'buf-b64': string; eof: boolean }>(
                (await virsh.batch([read])).out[0],
                'guest-file-read',
                '',
              );
              if (chunk.count > 0) run.onOutput(Buffer.from(chunk['buf-b64'], 'base64'));
            }
            if (status.exitcode !== undefined) return status.exitcode;
            return 128 + (status.signal ?? 0);
          }
          if (chunk.count === 0) await pause(pollMs);
        }
      } finally {
        await virsh
          .batch([
            agentCommand(domain, { execute: 'guest-file-close', arguments: { handle } }),
            agentCommand(domain, {
              execute: 'guest-exec',
              arguments: { path: '/bin/rm', arg: ['-f', `${file}.out`] },
            }),
          ])
          .catch(() => undefined);
      }
    },
  };
}

export type GuestAgent = ReturnType<typeof createGuestAgent>;
