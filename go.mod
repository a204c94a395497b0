module github.com/onceflow/onceflow

go 1.26
