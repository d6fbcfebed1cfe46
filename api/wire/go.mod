module github.com/discovery-go/discovery/api/wire

go 1.21
