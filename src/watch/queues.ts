import PQueue, { type QueueAddOptions } from 'p-queue';

type Task<T> = (options: { signal?: AbortSignal }) => PromiseLike<T> | T;

export class StoppedError extends Error {
  override readonly name = 'StoppedError';
  constructor() {
    super('not started: corral is stopping');
  }
}

/**
 * A p-queue that takes no new work once stopped: tasks still waiting for a slot reject with
 * StoppedError instead of starting, while running ones finish. `clear()` would instead leave the
 * waiting tasks' promises unsettled forever, and with them the pass that awaits them.
 */
export class StoppableQueue extends PQueue {
  private stopped = false;

  stop(): void {
    this.stopped = true;
  }

  override add<T>(
    task: Task<T>,
    options: { throwOnTimeout: true } & Exclude<QueueAddOptions, 'throwOnTimeout'>,
  ): Promise<T>;
  override add<T>(task: Task<T>, options?: Partial<QueueAddOptions>): Promise<T | void>;
  override add<T>(task: Task<T>, options?: Partial<QueueAddOptions>): Promise<T | void> {
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
    builds: new StoppableQueue({ concurrency: concurrency.builds }),
    clones: new StoppableQueue({ concurrency: concurrency.clones }),
  };
}
