// Package apidoc holds a test that keeps the public API documented: every
// exported function, method on an exported type, type, constant and
// variable of the repository's importable packages (all but package main,
// internal/, bench/, scripts/ and integration/) must carry a doc comment,
// or, for a type, constant or variable declared in a parenthesised group,
// sit in a group that carries one, as go doc shows it. The test fails
// listing every identifier without one by file and line.
//
// The package has no code of its own; run it with go test.
package apidoc
