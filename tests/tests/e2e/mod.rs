mod conversation;
mod disconnect;
mod errors;
mod memory;
mod profiles;
mod prompt;
