//! The only module that knows about napi: JS-facing classes and functions over the core.

mod error;
mod keys;
mod scraper;
mod server;

/// The addon's tokio runtime: one worker thread (napi-rs's default has one per core). A
/// scrape hops between several tasks (socket, secret stream, session, writer) and to the
/// JS thread and back; with two workers each hop may wake the other worker, a context
/// switch apiece (measured: 230 us of CPU per 1 KB scrape with two, 130 us with one;
/// benchmark/README.md). The work is I/O-bound, so one worker loses no throughput.
#[napi_derive::module_init]
fn init() {
    if let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        napi::bindgen_prelude::create_custom_tokio_runtime(runtime);
    }
}
