//! The entry points of the object: each program runs its path and maps the path's result
//! to a verdict (`Err`: dropped as malformed, counted).

mod reader;
mod tc;
mod xdp;
