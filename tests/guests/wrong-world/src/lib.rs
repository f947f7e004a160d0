//! Test guest: a valid component built for a world that is not Flumen's `operator` world.

wit_bindgen::generate!({ path: "wit", world: "wrong" });

struct Greeter;

impl exports::test::wrong::greeter::Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Greeter);
