//! `roombox`: the library behind `roomboxd`, the appliance daemon.

pub mod media;
