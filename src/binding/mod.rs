//! The only module that knows about napi: JS-facing classes and functions over the core.

mod error;
mod keys;
mod scraper;
mod server;
