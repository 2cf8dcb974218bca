// Package deployments holds cdcflow's docker compose stack
// (docker-compose.yml and the files it mounts) and, in its tests, the checks
// that keep the stack, the repository's Dockerfile and the programs'
// settings in agreement: the compose file is loaded with the Compose
// specification's own loader, the alert rules with Prometheus's rule parser.
// It has no code of its own. See docs/deployment.md.
package deployments
