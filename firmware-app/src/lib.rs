//! `roombox`: the library behind `roomboxd`, the appliance daemon.

pub mod board;
pub mod gpio;
