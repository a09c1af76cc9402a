/** What a base URL may be: http(s):// or an absolute file:// URL (docs/images.md). */
export function baseUrlProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `not a URL: ${text} (use http://, https:// or file:///absolute/path)`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:' && url.protocol !== 'file:')
    return `unsupported URL scheme "${url.protocol}" in ${text}: use http://, https:// or file://`;
  if (url.protocol === 'file:' && url.host !== '') return `a file:// URL names no host: ${text} (use file:///path)`;
  if (url.username || url.password) return `put no credentials in a base URL: ${url.protocol}//…@${url.host}`;
  return undefined;
}

/** The last path segment of a URL, decoded: the name a checksum list files the image under. */
export function fileNameOf(text: string): string {
  try {
    const segment = new URL(text).pathname.split('/').pop() ?? '';
    return decodeURIComponent(segment);
  } catch {
    return '';
  }
}
