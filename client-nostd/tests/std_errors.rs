//! Feature `std`: the crate's errors are `std::error::Error`, so host code can `?` them into
//! `Box<dyn Error>` (or anyhow) with their messages intact.

use std::error::Error as StdError;

use varta_client_nostd::{Agent, Error, StackError, Status, TaskError};

fn boxed<E: StdError + 'static>(e: E) -> Box<dyn StdError> {
    Box::new(e)
}

fn beat_refused() -> Result<(), Box<dyn StdError>> {
    let mut a = Agent::plain(0x501);
    let mut refuse = |_: &[u8]| -> Result<(), StackError> { Err(StackError::NoRoute) };
    a.try_beat(&mut refuse, Status::Ok, 0, 1)?;
    Ok(())
}

#[test]
fn errors_are_std_errors_with_their_messages() {
    let e = beat_refused().unwrap_err();
    assert_eq!(e.to_string(), "sending the beat: no route to the observer");
    assert_eq!(
        e.downcast_ref::<Error>(),
        Some(&Error::Send(StackError::NoRoute))
    );
    assert_eq!(
        boxed(StackError::Uncertain).to_string(),
        "the send failed and may have left the device"
    );
    assert_eq!(
        boxed(TaskError::UnknownTask).to_string(),
        "task index out of range"
    );
    assert_eq!(
        boxed(Error::SaltReused).to_string(),
        Error::SaltReused.to_string()
    );
}
