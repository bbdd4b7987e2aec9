//! Any text is either a config or an error with a place in the file; the
//! loader never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::config::Config;

fuzz_target!(|text: &str| {
    if let Err(e) = Config::parse(std::path::Path::new("fuzz.toml"), text) {
        // The error renders (the caret line included) without panicking.
        let _ = e.to_string();
    }
});
