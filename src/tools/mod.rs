//! The offline tools behind `mandate test`, `verify`, `replay` and
//! `serve-store`: they read an operator's files and may take seconds or a
//! solver, so the server never calls them (nothing under `api`, `engine` or
//! `server` imports this module). Each decides through the engine, so a
//! tool and a live server can never judge a request two ways.

pub mod refstore;
pub mod replay;
pub mod suite;
pub mod verify;
