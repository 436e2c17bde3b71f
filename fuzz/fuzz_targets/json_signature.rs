//! The JSON parser and the signature message builder on arbitrary bytes: never a panic, and
//! both message forms are themselves JSON that parses back to the same message (so what the
//! server signs over is well defined for every body it accepts).
#![no_main]

use keyward_core::signature::{MessageForm, SignedBody};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = SignedBody::parse(data) else {
        return;
    };
    for form in [MessageForm::AsSent, MessageForm::Canonical] {
        let message = body.message(form);
        let again = SignedBody::parse(message.as_bytes())
            .unwrap_or_else(|e| panic!("the {form:?} message does not parse back: {e:?}"));
        assert!(
            again.signature.is_none(),
            "the signature member was not removed"
        );
        assert_eq!(
            again.message(form),
            message,
            "the {form:?} message is not stable"
        );
    }
});
