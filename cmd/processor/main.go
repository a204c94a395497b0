// Command processor runs onceflow jobs.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "processor: the run command arrives with the processor issue")
	os.Exit(2)
}
