mod backends;
mod conversation;
mod disconnect;
mod errors;
mod failover;
mod memory;
mod profiles;
mod prompt;
