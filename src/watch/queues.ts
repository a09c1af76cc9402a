import PQueue, { type Options, type QueueAddOptions } from 'p-queue';

type Task<T> = (options: { signal?: AbortSignal }) => PromiseLike<T> | T;

export class StoppedError extends Error {
  override readonly name = 'StoppedError';
  constructor() {
    super('not started: corral is stopping');
  }
}

/**
 * A p-queue that takes no new work once stopped; running tasks finish. What happens to the rest:
 * - `reject`: tasks still waiting for a slot, or added later, reject with StoppedError. For the
 *   runner queue: `apply` awaits each phase at once, so the pass ends there (p-queue's `clear()`
 *   would leave those promises unsettled, and the pass hanging on them).
 * - `drop`: waiting tasks are dropped and later ones never start; their promises never settle.
 *   For the build queue: `apply` hands builds back as one promise that nobody may be listening to
 *   yet when the stop comes, so a rejection there would be an unhandled one.
 */
export class StoppableQueue extends PQueue {
  private stopped = false;

  constructor(
    options: Options<never, QueueAddOptions> & { concurrency: number },
    private readonly onStop: 'reject' | 'drop',
  ) {
    super(options);
  }

  stop(): void {
    this.stopped = true;
    if (this.onStop === 'drop') this.clear();
  }

  override add<T>(
    task: Task<T>,
    options: { throwOnTimeout: true } & Exclude<QueueAddOptions, 'throwOnTimeout'>,
  ): Promise<T>;
  override add<T>(task: Task<T>, options?: Partial<QueueAddOptions>): Promise<T | void>;
  override add<T>(task: Task<T>, options?: Partial<QueueAddOptions>): Promise<T | void> {
    if (this.stopped && this.onStop === 'drop') return new Promise<never>(() => undefined);
    return super.add(async (o): Promise<T> => {
      if (this.stopped) throw new StoppedError();
      return task(o);
    }, options);
  }
}

export interface PassQueues {
  builds: StoppableQueue;
  clones: StoppableQueue;
}

export function createQueues(concurrency: { builds: number; clones: number }): PassQueues {
  return {
    builds: new StoppableQueue({ concurrency: concurrency.builds }, 'drop'),
    clones: new StoppableQueue({ concurrency: concurrency.clones }, 'reject'),
  };
}
