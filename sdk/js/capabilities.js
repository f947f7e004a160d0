// The host interfaces a plugin imports. This stub (nothing granted) lets the SDK load outside a
// component, e.g. under Node for tests; build.sh replaces it with one importing exactly
// `output` and the capabilities listed in the plugin's plugin.toml.
export const name = "operator";
export default { output: null, log: null, state: null, blobs: null, inference: null };
