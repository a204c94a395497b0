// Package optcheck is the table the library's constructors validate their
// options with: one entry per option, naming it as its Go field, with the
// value and the rule it breaks. Every refusal is an *Error naming the
// option and the bad value, and a constructor's refusals come joined in
// one error (Check), so that a caller mapping options to its own names
// (package config, to its keys) finds each of them with Errors.
package optcheck

import (
	"errors"
	"fmt"
)

// Error is the refusal of one option.
type Error struct {
	// Component is who refuses ("engine", "kafka sink", ...).
	Component string
	// Option names the option as its Go field, from the options struct
	// ("Checkpoint.Timeout", "Reader.Start").
	Option string
	// Value is the bad value as the message shows it.
	Value string
	// Reason says what the value breaks ("is negative", ...).
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: option %s: %s %s", e.Component, e.Option, e.Value, e.Reason)
}

// Rule is one entry of a validation table: Bad is empty when the value is
// acceptable, else the reason (the message after the value).
type Rule struct {
	Option string
	Value  any
	Bad    string
}

// Check returns the rules' refusals joined (nil when every value is
// acceptable), each an *Error of component.
func Check(component string, rules ...Rule) error {
	var errs []error
	for _, r := range rules {
		if r.Bad != "" {
			errs = append(errs, &Error{Component: component, Option: r.Option, Value: show(r.Value), Reason: r.Bad})
		}
	}
	return errors.Join(errs...)
}

func show(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("%q", x)
	case fmt.Stringer:
		return x.String()
	default:
		return fmt.Sprint(x)
	}
}

// Errors returns every *Error in err's tree (errors.Join and %w), in
// order.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if e, ok := err.(*Error); ok {
			out = append(out, e)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// NotNegative refuses a negative number ("is negative" plus what 0
// means, when zero is said).
func NotNegative[N ~int | ~int64 | ~float64](v N, zero string) string {
	if v >= 0 {
		return ""
	}
	if zero != "" {
		return "is negative (" + zero + ")"
	}
	return "is negative"
}

// Range refuses a number outside lo..hi.
func Range[N ~int | ~int64 | ~float64](v, lo, hi N) string {
	if v < lo || v > hi {
		return fmt.Sprintf("is outside %v..%v", lo, hi)
	}
	return ""
}

// If returns bad when cond holds, else "".
func If(cond bool, bad string) string {
	if cond {
		return bad
	}
	return ""
}
