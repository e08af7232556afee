"""The gRPC API: servicers, authentication, authorisation and the server around them."""
