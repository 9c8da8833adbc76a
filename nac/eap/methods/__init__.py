"""One module per EAP method, all behind nac.eap.methods.base.Method."""
