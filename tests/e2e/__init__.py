"""The whole story on a real Kubernetes cluster given by KUBECONFIG (marker ``e2e``)."""
