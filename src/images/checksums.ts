/**
 * Checksum lists as distributions publish them next to their cloud images: GNU coreutils lines
 * (`<hex>  <name>`, `<hex> *<name>` for binary mode) and BSD tags (`SHA256 (<name>) = <hex>`).
 * Only sha256 digests count; other lines (signatures, comments, SHA512) are skipped.
 */
export function parseChecksums(text: string): Map<string, string> {
  const byName = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const gnu = /^([0-9a-fA-F]{64}) [ *]?(.+)$/.exec(line);
    const bsd = /^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$/.exec(line);
    const [name, hex] = gnu ? [gnu[2], gnu[1]] : bsd ? [bsd[1], bsd[2]] : [];
    if (name && hex) byName.set(name.replace(/^\.\//, ''), hex.toLowerCase());
  }
  return byName;
}
