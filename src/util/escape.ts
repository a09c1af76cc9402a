/**
 * Names come from the filesystem and from YAML: a newline or an escape sequence in one must not
 * split a message over lines or inject text into the output. Control characters are shown escaped.
 */
export function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}

/** A file name as bytes: the text when it is valid UTF-8, otherwise undefined. */
export function utf8Name(bytes: Buffer): string | undefined {
  const text = bytes.toString('utf8');
  return Buffer.from(text, 'utf8').equals(bytes) ? text : undefined;
}

/** A name that is not valid UTF-8, with the offending bytes as \xNN (the rest as text). */
export function showBytes(bytes: Buffer): string {
  let out = '';
  for (let i = 0; i < bytes.length;) {
    const byte = bytes[i] ?? 0;
    const len = byte < 0x80 ? 1 : byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 0;
    const chunk = len > 0 ? bytes.subarray(i, i + len) : undefined;
    const text = chunk && chunk.length === len ? utf8Name(chunk) : undefined;
    if (text !== undefined && len > 0) {
      out += oneLine(text);
      i += len;
    } else {
      out += `\\x${byte.toString(16).padStart(2, '0')}`;
      i += 1;
    }
  }
  return out;
}
