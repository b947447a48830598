// The native layer: the types `napi build` generates for binding.generated.js.
export * from './binding.generated'
