//! Helpers for the cross-crate tests: headless Chromium over the DevTools
//! protocol, network namespaces, child processes.
