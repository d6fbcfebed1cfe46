# The kratos v0.6.0 test client (test/kratos/kratosclient), built statically
# on the host by the container suite and packed without a base image.
FROM scratch
COPY kratosclient /kratosclient
USER 65532:65532
ENTRYPOINT ["/kratosclient"]
