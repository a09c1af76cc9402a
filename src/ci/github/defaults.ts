/** GitHub's public REST API; `ci.github.api` points elsewhere (GitHub Enterprise Server, tests). */
export const DEFAULT_GITHUB_API = 'https://api.github.com';
