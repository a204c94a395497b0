// Package integration holds onceflow's tests against a real Apache Kafka
// broker: the broker itself (package broker), the kit every integration
// test uses to get one (package kafkatest), and the end-to-end tests.
package integration
