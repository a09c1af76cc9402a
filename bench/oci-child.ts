/**
 * One corral push or pull in a process of its own, as `corral push` and `corral pull` run: the
 * benchmark times this whole process, like the cp and skopeo processes it is compared with.
 * Prints the stats and this process's CPU time as JSON.
 *
 *   node oci-child.js push <registry> <repository> <tag> <file>
 *   node oci-child.js pull <registry> <repository> <tag> <staging dir>
 */
import { RegistryClient } from '../src/oci/client.js';
import { DEFAULT_CHUNK_SIZE } from '../src/oci/format.js';
import { fetchImage, pullImage } from '../src/oci/pull.js';
import { pushImage } from '../src/oci/push.js';

const [op, registry, repository, tag, target] = process.argv.slice(2) as [string, string, string, string, string];
const client = new RegistryClient(registry, { credentials: { get: () => Promise.resolve(undefined) } });
let stats: unknown;
if (op === 'push') {
  stats = await pushImage(
    [{ name: 'disk', path: target, format: 'raw' }],
    {},
    {
      client,
      repository,
      tag,
      chunkSize: DEFAULT_CHUNK_SIZE,
      concurrency: 4,
    },
  );
} else if (op === 'pull') {
  const image = await fetchImage(client, repository, tag);
  if (!image) throw new Error(`${registry}/${repository}:${tag} not found`);
  stats = (await pullImage(image, target, { client, repository, concurrency: 4 })).stats;
} else {
  throw new Error(`unknown operation ${op}`);
}
client.close();
const cpu = process.cpuUsage();
process.stdout.write(`${JSON.stringify({ stats, cpuMs: (cpu.user + cpu.system) / 1000 })}\n`);
