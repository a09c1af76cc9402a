/** GitHub's public REST API, the compiled default of `ci.github.api` (GitHub Enterprise Server and tests point it elsewhere). */
export const DEFAULT_GITHUB_API = 'https://api.github.com';
