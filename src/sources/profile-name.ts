/** What a profile directory may be called: it becomes part of guest names, so it must be safe there. */
export const PROFILE_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
